"""The embedded demo cohort: phantom sources written as NIfTI files plus their registry and volume sheet.

What the cohort looks like is data (config/demo_cohort.yaml); this module only renders it. Deterministic: the same
seed gives byte-identical arrays, so tests and the demo DAG see the same cohort everywhere.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import yaml

from cadsflow.imageio import save_nifti
from cadsflow.paths import CONFIG_DIR
from cadsflow.phantom import make_grid, make_phantom
from cadsflow.sheet import write_sheet
from cadsflow.sources import discover_volumes, load_registry, parse_registry

DEMO_COHORT_YAML = CONFIG_DIR / "demo_cohort.yaml"
SPARSE_UNANNOTATED = 255  # SAROS convention: value for slices nobody annotated (Online Methods 2.1)
LESION_RADIUS_MM = 6.0
log = logging.getLogger(__name__)


def build_demo_cohort(out_dir: str | Path, spec_path: str | Path = DEMO_COHORT_YAML) -> Path:
    """Write images, labels, registry.yaml and volumes.tsv under out_dir; return the sheet path."""
    out_dir = Path(out_dir)
    spec = yaml.safe_load(Path(spec_path).read_text())
    for index, (name, src) in enumerate(spec["sources"].items()):
        _write_source(out_dir, name, src, spec["seed"] + 1000 * index)
    registry_path = out_dir / "registry.yaml"
    registry_path.write_text(yaml.safe_dump(demo_registry_data(spec), sort_keys=False))
    sheet_path = out_dir / "volumes.tsv"
    write_sheet(discover_volumes(load_registry(registry_path)), sheet_path)
    return sheet_path


def planned_demo_cohort(out_dir: str | Path, spec_path: str | Path = DEMO_COHORT_YAML):
    """What build_demo_cohort will write, without writing anything: (sources, volumes, files).

    The workflow plans its DAG from this (a dry run on a fresh clone writes no data); the demo_cohort rule then
    writes exactly `files` (images, labels, registry, sheet). The volumes equal those of the written sheet.
    """
    out_dir = Path(out_dir)
    spec = yaml.safe_load(Path(spec_path).read_text())
    registry_path = out_dir / "registry.yaml"
    sources = parse_registry(demo_registry_data(spec), registry_path, out_dir.resolve())
    cases = {name: [f"case{i:03d}" for i in range(len(src["regions"]))] for name, src in spec["sources"].items()}
    volumes = discover_volumes(sources, cases)
    files = [registry_path, out_dir / "volumes.tsv"]
    files += [Path(p) for v in volumes for p in (v.image, v.label) if p]
    return sources, volumes, files


def demo_registry_data(spec: dict) -> dict:
    """The demo cohort's registry (relative patterns under the cohort folder), from its spec alone."""
    return {"sources": {name: _registry_entry(name, src) for name, src in spec["sources"].items()}}


def _write_source(out_dir: Path, name: str, src: dict, seed: int) -> None:
    values = _label_values(src)
    sparse = int(src.get("sparse_slices", 0))
    for case_index, region in enumerate(src["regions"]):
        case = f"case{case_index:03d}"
        grid = make_grid(region, spacing=src["spacing"], orientation=src["orientation"])
        image, masks = make_phantom(grid, seed + case_index)
        save_nifti(image, grid.affine, out_dir / name / "images" / f"{case}.nii.gz")
        if values:
            label = _paint(masks, values, grid.shape, grid.affine)
            if sparse:
                label = _sparsify(label, sparse, grid.affine)
            save_nifti(label, grid.affine, out_dir / name / "labels" / f"{case}.nii.gz")
        log.info("demo %s/%s: %s %s", name, case, region, grid.shape)


def _label_values(src: dict) -> dict:
    return {i: spec for i, spec in enumerate(src.get("labels") or [], start=1)}


def _registry_entry(name: str, src: dict) -> dict:
    values = _label_values(src)
    sparse = int(src.get("sparse_slices", 0))
    entry = {
        "body_region": src.get("body_region", ""),
        "licence": src.get("licence", ""),
        "images": f"{name}/images/{{case}}.nii.gz",
        "split": {"test": list(src.get("test_cases", []))},
        "anonymize_face": bool(src.get("anonymize_face", False)),
    }
    if values:
        entry["labels"] = f"{name}/labels/{{case}}.nii.gz"
        entry["label_values"] = dict(values)
        if sparse:
            entry["sparse_slices"] = sparse
            entry["label_values"][SPARSE_UNANNOTATED] = {"unannotated": True}
    return entry


def _paint(masks: dict[str, np.ndarray], values: dict[int, object], shape, affine) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    for value, spec in values.items():
        if isinstance(spec, str):
            label[masks[spec]] = value
        elif "union" in spec:
            for target in spec["union"]:
                label[masks[target]] = value
        elif "lesion_of" in spec:
            label[_lesion(masks[spec["lesion_of"][0]], affine)] = value
    return label


def _lesion(organ: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A small ball inside the organ, centred on its centroid (deterministic)."""
    if not organ.any():
        return organ
    centre = np.array(np.nonzero(organ)).mean(axis=1)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    grid = np.indices(organ.shape, dtype=np.float32)
    dist2 = sum(((grid[a] - centre[a]) * zooms[a]) ** 2 for a in range(3))
    return organ & (dist2 <= LESION_RADIUS_MM**2)


def _sparsify(label: np.ndarray, every: int, affine: np.ndarray) -> np.ndarray:
    """Keep every n-th axial slice; mark the others as not annotated."""
    axial = int(np.argmax(np.abs(affine[2, :3])))  # the voxel axis that runs along z (superior)
    keep = np.zeros(label.shape[axial], dtype=bool)
    keep[::every] = True
    shape = [1, 1, 1]
    shape[axial] = -1
    return np.where(keep.reshape(shape), label, SPARSE_UNANNOTATED).astype(label.dtype)


def cohort_fingerprint(spec_path: str | Path = DEMO_COHORT_YAML) -> str:
    """Hash of the cohort spec and generator code: a changed phantom invalidates a cached cohort."""
    from cadsflow import phantom

    digest = hashlib.sha256(Path(spec_path).read_bytes())
    digest.update(Path(phantom.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def ensure_demo_cohort(out_dir: str | Path, spec_path: str | Path = DEMO_COHORT_YAML) -> Path:
    """Build the cohort unless an identical one (same fingerprint) is already there."""
    out_dir = Path(out_dir)
    stamp = out_dir / ".fingerprint"
    fingerprint = cohort_fingerprint(spec_path)
    sheet = out_dir / "volumes.tsv"
    if sheet.exists() and stamp.exists() and stamp.read_text().strip() == fingerprint:
        return sheet
    sheet = build_demo_cohort(out_dir, spec_path)
    stamp.write_text(fingerprint + "\n")
    return sheet


ATLAS_SEED = 557  # the atlas subject differs from every cohort subject (cohort seeds start at demo_cohort.yaml's)
ATLAS_GROUP = 557  # Online Methods 2.1 (4): brain tissue labels come from a registered atlas


def write_demo_atlas(image_path: str | Path, labels_path: str | Path, seed: int = ATLAS_SEED) -> None:
    """The demo's brain atlas: a phantom head (same generator as the cohort, another subject) with group-557
    tissue labels, so registration to a cohort head can be scored against that head's own phantom truth."""
    from cadsflow.labels import load_label_space

    grid = make_grid("head", spacing=(1.5, 1.5, 1.5), orientation="RAS")
    image, masks = make_phantom(grid, seed)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    for name, label_id in load_label_space().group_label_map(ATLAS_GROUP).items():
        if name in masks:
            labels[masks[name]] = label_id
    affine = grid.affine.copy()
    affine[:3, 3] = 0.0  # standardized-grid convention: scale only (Online Methods 1.2)
    save_nifti(image, affine, image_path)
    save_nifti(labels, affine, labels_path)
