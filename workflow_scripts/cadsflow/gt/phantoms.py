"""Constructed inputs with known answers for the gt stage's tests and workflow_scripts/benchmarks/bench_gt.py.

- body_phantom: a SAROS-like torso (subcutaneous tissue, muscle, abdominal cavity, bones, a tapering organ) whose
  dense labels are the truth that sparse-slice interpolation must recover;
- sparsify: keep every n-th axial slice (or runs of slices, as on the 1.5 mm grid), mark the rest unannotated;
- write_standardized: a results/standardized/{volume_id}/ folder as the standardize stage writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cadsflow.imageio import save_nifti

BODY_CLASSES = {"subcutaneous_tissue": 1, "muscle": 2, "abdominal_cavity": 3, "bones": 5, "glands": 6}


def body_phantom(shape=(64, 56, 80)) -> np.ndarray:
    """Dense SAROS-like labels (SAROS values) of a torso whose cross-sections change smoothly along z."""
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    nx, ny, nz = shape
    s = z / max(nz - 1, 1)
    cx, cy = nx / 2 + 3 * np.sin(2 * np.pi * s), ny / 2
    ax, ay = nx * (0.40 + 0.05 * np.sin(np.pi * s)), ny * (0.36 + 0.04 * np.cos(np.pi * s))
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[r < 1.0] = BODY_CLASSES["subcutaneous_tissue"]
    labels[r < 0.86] = BODY_CLASSES["muscle"]
    labels[r < 0.72] = BODY_CLASSES["abdominal_cavity"]
    spine = ((x - cx) / 5.0) ** 2 + ((y - (cy - 0.55 * ay)) / 4.0) ** 2 < 1.0
    labels[spine] = BODY_CLASSES["bones"]
    # an organ that appears and vanishes inside the field of view (tests tapering at its ends)
    organ_r = 7.0 * np.sin(np.pi * np.clip((s - 0.2) / 0.6, 0, 1))
    organ = (x - (cx + 0.3 * ax)) ** 2 + (y - (cy + 0.1 * ay)) ** 2 < organ_r**2
    labels[organ & (r < 0.72)] = BODY_CLASSES["glands"]
    return labels


def sparsify(labels: np.ndarray, step: int, unannotated: int = 255, run: int = 1, offset: int = 0) -> np.ndarray:
    """Keep `run` consecutive axial slices every `step` slices (starting at `offset`); the rest -> unannotated."""
    out = np.full_like(labels, unannotated)
    keep = np.zeros(labels.shape[2], dtype=bool)
    for start in range(offset, labels.shape[2], step):
        keep[start : start + run] = True
    out[:, :, keep] = labels[:, :, keep]
    return out


def write_standardized(
    folder: str | Path,
    volume_id: str,
    source: str,
    image: np.ndarray | None,
    labels: dict[str, np.ndarray] | None = None,
    spacing_mm: float = 1.5,
    status: str = "ok",
    reason: str = "",
    split: str = "train_gt",
) -> Path:
    """A standardized volume folder: record.json, and when ok image.nii.gz + label files (name -> array)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    record = {"volume_id": volume_id, "source": source, "split": split, "status": status, "reason": reason}
    if status == "ok":
        save_nifti(image.astype(np.int16), affine, folder / "image.nii.gz")
        for file_name, data in (labels or {}).items():
            save_nifti(data, affine, folder / file_name)
    (folder / "record.json").write_text(json.dumps(record))
    return folder


def demo_registry(path: str | Path, sources: tuple[str, ...] | None = None) -> Path:
    """A registry of the demo cohort's sources (config/demo_cohort.yaml) with the label values that
    cadsflow.demo gives them (labels numbered from 1 in listed order; 255 = unannotated for sparse sources),
    without rendering any image: for fast tests of label handling."""
    import yaml

    from cadsflow.demo import DEMO_COHORT_YAML, SPARSE_UNANNOTATED

    spec = yaml.safe_load(Path(DEMO_COHORT_YAML).read_text())["sources"]
    registry = {}
    for name, src in spec.items():
        if sources is not None and name not in sources:
            continue
        entry = {"images": f"{name}/images/{{case}}.nii.gz", "body_region": src.get("body_region", ""),
                 "anonymize_face": bool(src.get("anonymize_face", False))}
        values = {i: v for i, v in enumerate(src.get("labels") or [], start=1)}
        if values:
            entry["labels"] = f"{name}/labels/{{case}}.nii.gz"
            entry["label_values"] = values
            if src.get("sparse_slices"):
                entry["sparse_slices"] = int(src["sparse_slices"])
                entry["label_values"][SPARSE_UNANNOTATED] = {"unannotated": True}
        registry[name] = entry
    path = Path(path)
    path.write_text(yaml.safe_dump({"sources": registry}, sort_keys=False))
    return path
