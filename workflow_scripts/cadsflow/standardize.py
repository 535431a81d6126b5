"""Standardization (Online Methods 1.2): reorient to RAS, resample to 1.5 mm isotropic, reduce the affine to
scale/shear (rotation and translation removed), and record what restores a label map to the original grid.

Output per volume: a directory with record.json (always; status ok or quarantined) and, when ok, image.nii.gz
(int16 HU), label.nii.gz (the source's own label values, nearest neighbour) and label_<set>.nii.gz for each extra
label set of the case (registry `extra_label_sets`, sheet column `label_<set>`: the same checks against that set's
values, the same resampling onto the same grid). A quarantined volume writes only its record, so one bad file never
stops the factory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from cadsflow.atomic import atomic_dir
from cadsflow.imageio import MAX_IMAGE_BYTES, LoadedVolume, read_volume, save_nifti
from cadsflow.resample import output_shape, resample
from cadsflow.sheet import MAIN_LABEL_SET
from cadsflow.validate import IntensityRule, QuarantineError, load_checked_image, load_checked_label

TARGET_SPACING_MM = 1.5  # Online Methods 1.2
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StandardizeSettings:
    spacing_mm: float = TARGET_SPACING_MM
    image_interpolation: str = "cubic"
    intensity: IntensityRule = field(default_factory=IntensityRule)
    max_image_bytes: int = MAX_IMAGE_BYTES  # header dims x bytes per voxel above this: quarantined unread


@dataclass
class Geometry:
    """Everything needed to go from the standardized grid back to the original one."""

    original_shape: list[int]
    original_affine: list[list[float]]
    orientation: list[list[float]]  # nibabel ornt: input axis -> (RAS axis, flip)
    reoriented_shape: list[int]
    reoriented_affine: list[list[float]]
    zooms: list[float]  # spacing of the reoriented grid (mm)
    spacing_mm: float
    output_shape: list[int]
    output_affine: list[list[float]]  # scale/shear only
    rotation: list[list[float]]  # removed rotation (reoriented linear part = rotation @ shear_scale)


def standardize_volume(
    volume_id: str,
    image_path: str,
    label_path: str,
    out_dir: str | Path,
    known_label_values: set[int] | None = None,
    settings: StandardizeSettings = StandardizeSettings(),
    extra_record: dict | None = None,
    extra_labels: dict[str, str] | None = None,
    known_extra_values: dict[str, set[int] | None] | None = None,
) -> dict:
    """Validate, standardize and write one volume into `out_dir` (created atomically); return its record.

    `extra_labels` (set name -> file) are the case's further label files; each gets the main label's checks
    against its own known values (`known_extra_values[set]`; None checks no values, and with `known_extra_values`
    given a set it does not name is refused) and is written as label_<set>.nii.gz on the same grid. Any failed
    check quarantines the whole volume, naming the file.
    """
    extra_labels = dict(extra_labels or {})
    record = {"volume_id": volume_id, "image": str(image_path), "label": str(label_path or ""),
              **({"extra_labels": extra_labels} if extra_labels else {}), **(extra_record or {})}
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        try:
            image = load_checked_image(image_path, settings.intensity, settings.max_image_bytes)
            labels = _checked_labels(image, label_path, known_label_values, extra_labels, known_extra_values,
                                     settings.max_image_bytes)
        except QuarantineError as exc:
            log.warning("%s quarantined: %s (%s)", volume_id, exc.reason, exc.file)
            record.update(status="quarantined", reason=exc.reason, file=exc.file)
        else:
            geometry, std_image, std_labels = _standardize_arrays(image, labels, settings)
            save_nifti(std_image, np.asarray(geometry.output_affine), tmp / "image.nii.gz")
            for name, std_label in std_labels.items():
                save_nifti(std_label, np.asarray(geometry.output_affine), tmp / label_file_name(name))
            record.update(status="ok", reason="", file="", label_sets=list(std_labels), geometry=asdict(geometry))
            log.info("%s: %s -> %s at %.2f mm, label sets %s", volume_id, geometry.original_shape,
                     geometry.output_shape, settings.spacing_mm, list(std_labels))
        (tmp / "record.json").write_text(json.dumps(record, indent=1))
    return record


def label_file_name(label_set: str) -> str:
    """The standardized file of a label set: label.nii.gz for the main set, label_<set>.nii.gz for an extra one."""
    return "label.nii.gz" if label_set == MAIN_LABEL_SET else f"label_{label_set}.nii.gz"


def _checked_labels(
    image: LoadedVolume,
    label_path: str,
    known_values: set[int] | None,
    extra_labels: dict[str, str],
    known_extra_values: dict[str, set[int] | None] | None,
    max_bytes: int,
) -> dict[str, LoadedVolume]:
    """Every label file of the volume, checked against the image (main set first); raises QuarantineError."""
    labels = {MAIN_LABEL_SET: load_checked_label(label_path, image, known_values, max_bytes)} if label_path else {}
    for name, path in extra_labels.items():
        if known_extra_values is not None and name not in known_extra_values:
            raise QuarantineError(
                f"extra label set {name!r} is not an extra label set of the volume's source "
                f"(its sets: {sorted(known_extra_values)})", path
            )
        known = known_extra_values.get(name) if known_extra_values is not None else None
        try:
            labels[name] = load_checked_label(path, image, known, max_bytes)
        except QuarantineError as exc:
            raise QuarantineError(f"extra label set {name!r}: {exc.reason}", exc.file or path) from None
    return labels


def _standardize_arrays(image: LoadedVolume, labels: dict[str, LoadedVolume], settings: StandardizeSettings):
    """The standardized image, each label map by set name (nearest neighbour, same grid), and the geometry."""
    ornt = nib.orientations.io_orientation(image.affine)
    data = nib.orientations.apply_orientation(image.data, ornt)
    reoriented = image.affine @ nib.orientations.inv_ornt_aff(ornt, image.data.shape)
    rotation, shear_scale = _split_rotation(reoriented[:3, :3])
    zooms = np.sqrt((reoriented[:3, :3] ** 2).sum(axis=0))
    out_shape = output_shape(data.shape, zooms, settings.spacing_mm)
    steps = [settings.spacing_mm / z for z in zooms]
    out_affine = np.eye(4)
    out_affine[:3, :3] = shear_scale @ np.diag(steps)  # translation dropped (Online Methods 1.2)
    std_image = resample(data, steps, out_shape, settings.image_interpolation, dtype=np.int16)
    std_labels = {}
    for name, label in labels.items():
        label_data = nib.orientations.apply_orientation(label.data, ornt)
        std_labels[name] = resample(label_data, steps, out_shape, "nearest", dtype=_label_dtype(label_data))
    geometry = Geometry(
        original_shape=list(image.data.shape),
        original_affine=image.affine.tolist(),
        orientation=ornt.tolist(),
        reoriented_shape=list(data.shape),
        reoriented_affine=reoriented.tolist(),
        zooms=zooms.tolist(),
        spacing_mm=settings.spacing_mm,
        output_shape=list(out_shape),
        output_affine=out_affine.tolist(),
        rotation=rotation.tolist(),
    )
    return geometry, std_image, std_labels


def _split_rotation(linear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """linear = rotation @ shear_scale with shear_scale upper triangular and a positive diagonal (QR)."""
    q, r = np.linalg.qr(linear)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1
    return q * signs, (r.T * signs).T


def _label_dtype(data: np.ndarray):
    return np.uint8 if data.max() <= 255 else np.uint16


def restore_label(label_std: np.ndarray, geometry: dict) -> tuple[np.ndarray, np.ndarray]:
    """Map a label map on the standardized grid back onto the original grid (nearest neighbour).

    Returns (data, affine) with exactly the original shape and affine.
    """
    if tuple(label_std.shape) != tuple(geometry["output_shape"]):
        raise ValueError(
            f"label map shape {label_std.shape} is not the standardized grid {tuple(geometry['output_shape'])}"
        )
    zooms = np.asarray(geometry["zooms"])
    steps = zooms / geometry["spacing_mm"]  # reoriented index i sits at standardized index i * zoom / spacing
    back = resample(label_std, steps, geometry["reoriented_shape"], "nearest")
    ornt = np.asarray(geometry["orientation"])
    inverse = np.zeros_like(ornt)
    for axis, (target, flip) in enumerate(ornt):
        inverse[int(target)] = (axis, flip)
    data = nib.orientations.apply_orientation(back, inverse)
    return np.ascontiguousarray(data), np.asarray(geometry["original_affine"])


def restore_label_file(label_path: str, record_path: str, out_path: str) -> None:
    geometry = json.loads(Path(record_path).read_text())["geometry"]
    data = read_volume(label_path).data
    restored, affine = restore_label(data, geometry)
    save_nifti(restored, affine, out_path)


def standardize_batch(volumes, out_dir: str | Path, known_values: dict, settings: StandardizeSettings) -> list[dict]:
    """Standardize each volume of a batch into out_dir/<volume_id>/.

    known_values[volume_id]: None (no registry: values unchecked), the main label's known values, or, for a
    volume with extra label files, {"main": values, <set>: values} for every label set of its source.
    A volume that fails unexpectedly (not a validation failure) is recorded as failed with the error, so its
    batch-mates' results are kept; the quarantine table lists it like a quarantined one.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for vol in volumes:
        extra = {"source": vol.source, "split": vol.split}
        try:
            known, known_extra = _known_value_sets(known_values.get(vol.volume_id))
            records.append(
                standardize_volume(vol.volume_id, vol.image, vol.label, out_dir / vol.volume_id, known, settings,
                                   extra, vol.extra_labels, known_extra)
            )
        except Exception as exc:  # one volume's crash must not discard the batch
            log.exception("%s: standardization failed", vol.volume_id)
            record = {"volume_id": vol.volume_id, "image": vol.image, "label": vol.label,
                      **({"extra_labels": dict(vol.extra_labels)} if vol.extra_labels else {}), **extra,
                      "status": "failed", "reason": f"standardization failed: {type(exc).__name__}: {exc}",
                      "file": vol.image}
            with atomic_dir(out_dir / vol.volume_id) as tmp:
                (tmp / "record.json").write_text(json.dumps(record, indent=1))
            records.append(record)
    return records


def _known_value_sets(known) -> tuple[set[int] | None, dict[str, set[int] | None] | None]:
    """(main label's values, extra sets' values) from one volume's known_values entry (see standardize_batch)."""
    if known is None:
        return None, None
    if isinstance(known, dict):
        return set(known[MAIN_LABEL_SET]), {name: set(v) for name, v in known.items() if name != MAIN_LABEL_SET}
    return set(known), None


def settings_from_config(cfg: dict) -> StandardizeSettings:
    return StandardizeSettings(
        spacing_mm=float(cfg["spacing_mm"]),
        image_interpolation=cfg["image_interpolation"],
        intensity=IntensityRule(**cfg["intensity"]),
        max_image_bytes=int(cfg.get("max_image_bytes", MAX_IMAGE_BYTES)),
    )


def read_record(volume_dir: str | Path) -> dict:
    return json.loads((Path(volume_dir) / "record.json").read_text())


def batch_records(batch_dirs) -> list[dict]:
    """The records of every volume in the given standardized batch directories, in id order."""
    return [read_record(d) for batch in batch_dirs for d in sorted(Path(batch).iterdir()) if d.is_dir()]


def write_quarantine_table(batch_dirs, quarantine_path: str, status_path: str) -> None:
    """One line per quarantined or failed volume (volume_id, file, reason); one per volume with its status."""
    from cadsflow.atomic import write_text

    quarantined, status = ["volume_id\tfile\treason"], ["volume_id\tsource\tsplit\tstatus"]
    for r in batch_records(batch_dirs):
        status.append(f"{r['volume_id']}\t{r.get('source', '')}\t{r.get('split', '')}\t{r['status']}")
        if r["status"] != "ok":
            reason = r["reason"].replace("\t", " ").replace("\n", " ")
            quarantined.append(f"{r['volume_id']}\t{r.get('file', '')}\t{reason}")
    write_text(quarantine_path, "\n".join(quarantined) + "\n")
    write_text(status_path, "\n".join(status) + "\n")
    log.info("%d volumes, %d quarantined", len(status) - 1, len(quarantined) - 1)
