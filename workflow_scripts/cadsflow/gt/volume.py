"""One standardized volume -> its ground truth in group space: results/gt/{volume_id}/.

Output directory (written atomically):
- record.json: volume_id, source, status ("ok" | "skipped"), reason, groups written, label sets used, and for
  sparse sources the summary of their unannotated slices (interpolated, or left to nnU-Net's `ignore` label; see
  cadsflow.gt.sparse.SPARSE_MODES)
- group_<G>.nii.gz: uint8 label map of group G (ids = label_id_in_group, `ignore` = n+1), for every group in which
  the source labels a structure exactly, plus group 557 when atlas labels were registered
- provenance.tsv: where each structure came from (see provenance.py)

A quarantined volume, a volume without labels (and no atlas), or a volume whose source is not in the registry
writes only record.json with status "skipped" and the reason, so one such volume never stops the factory. A source
whose mapping is still TODO is an error: its labels are never interpreted by guesswork.

When a volume has several label sets (main + extra), their maps of the same group are combined: an exact structure
wins over `ignore`, `ignore` over background, and where two sets label different structures exactly the later set
(extra over main, in registry order) wins.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from cadsflow.atomic import atomic_dir
from cadsflow.gt.atlas import BRAIN_GROUP, Atlas, RegistrationSettings, register_atlas_labels
from cadsflow.gt.mapping import (
    LabelSet,
    MappingError,
    exact_groups,
    ignore_label,
    label_sets,
    map_to_group,
    value_counts,
)
from cadsflow.gt.provenance import ProvenanceRow, write_provenance
from cadsflow.gt.sparse import INTERPOLATE, SPARSE_MODES, annotated_slices, densify_sparse_labels
from cadsflow.imageio import save_nifti
from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.sources import Source

log = logging.getLogger(__name__)


def prepare_volume_gt(
    volume_id: str,
    source: Source | None,
    standardized_dir: str | Path,
    out_dir: str | Path,
    atlas: Atlas | None = None,
    registration: RegistrationSettings = RegistrationSettings(),
    space: LabelSpace | None = None,
    sparse_labels: str = INTERPOLATE,
) -> dict:
    """Write results/gt/{volume_id}/ for one standardized volume; return its record. `sparse_labels` says what a
    sparse source's unannotated slices become (cadsflow.gt.sparse.SPARSE_MODES)."""
    if sparse_labels not in SPARSE_MODES:
        raise ValueError(f"sparse_labels must be one of {SPARSE_MODES}, not {sparse_labels!r}")
    space = space or load_label_space()
    std = Path(standardized_dir)
    std_record = _read_record(std / "record.json", volume_id)
    record = {"volume_id": volume_id, "source": std_record.get("source", source.name if source else "")}
    with atomic_dir(out_dir) as tmp:
        reason = _skip_reason(std_record, source, std, atlas, space)
        if reason:
            log.info("%s: no ground truth written: %s", volume_id, reason)
            record.update(status="skipped", reason=reason, groups=[], label_sets=[])
        else:
            maps, rows, details = _build_group_maps(volume_id, source, std, atlas, registration, space,
                                                   sparse_labels)
            affine = nib.load(str(std / "image.nii.gz")).affine
            for group, data in sorted(maps.items()):
                save_nifti(data, affine, tmp / f"group_{group}.nii.gz")
            write_provenance(rows, tmp / "provenance.tsv")
            record.update(status="ok", reason="", groups=sorted(maps), **details)
            log.info("%s: wrote groups %s (%d provenance rows)", volume_id, sorted(maps), len(rows))
        (tmp / "record.json").write_text(json.dumps(record, indent=1))
    return record


def _read_record(path: Path, volume_id: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"volume {volume_id}: {path} missing; expected the standardize stage's record")
    return json.loads(path.read_text())


def _skip_reason(std_record: dict, source: Source | None, std: Path, atlas: Atlas | None, space) -> str:
    if std_record.get("status") != "ok":
        return f"standardize status {std_record.get('status')!r}: {std_record.get('reason', '')}".strip()
    if source is None:
        return "source not in the registry: its label values cannot be interpreted"
    present = [s for s in label_sets(source, space).values() if (std / s.file_name).is_file()]
    if not present and atlas is None:
        return "no label file and no atlas registration for this source"
    return ""


def _build_group_maps(volume_id, source, std, atlas, registration, space, sparse_labels=INTERPOLATE):
    where = f"volume {volume_id}"
    image = nib.load(str(std / "image.nii.gz"))
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    maps: dict[int, np.ndarray] = {}
    rows: list[ProvenanceRow] = []
    details: dict = {"label_sets": []}
    for label_set in label_sets(source, space).values():
        path = std / label_set.file_name
        if not path.is_file():
            continue
        label_set.require_mapping(source.name)
        labels = np.asanyarray(nib.load(str(path)).dataobj)
        if labels.shape != image.shape:
            raise MappingError(f"{where}: {path} has shape {labels.shape}, the image {image.shape}")
        origin = "source_gt"
        if source.sparse_slices and label_set.name == "main":
            labels, details["sparse"] = _densify(labels, label_set, spacing, f"{where}: {path}", sparse_labels)
            origin = "interpolated" if sparse_labels == INTERPOLATE else origin
        set_maps, set_rows = map_label_set(labels, label_set, space, f"{where}: {path}", origin)
        for group, data in set_maps.items():
            maps[group] = data if group not in maps else combine_group_maps(maps[group], data, group, space)
        rows += set_rows
        details["label_sets"].append(label_set.name)
    if atlas is not None:
        registered = register_atlas_labels(np.asanyarray(image.dataobj), image.affine, atlas, registration, where)
        if BRAIN_GROUP in maps:  # the source's own exact brain labels win over registered ones
            registered = combine_group_maps(registered, maps[BRAIN_GROUP], BRAIN_GROUP, space)
        maps[BRAIN_GROUP] = registered
        counts = np.bincount(registered.ravel(), minlength=len(space.group(BRAIN_GROUP)) + 1)
        names = {i: n for n, i in space.group_label_map(BRAIN_GROUP).items()}
        rows += [
            ProvenanceRow(names[i], BRAIN_GROUP, "registered", i, int(counts[i])) for i in sorted(names) if counts[i]
        ]
        details["registered"] = {"transform": registration.transform, "interpolator": registration.interpolator}
    return maps, rows, details


def map_label_set(labels, label_set: LabelSet, space: LabelSpace, where: str, origin: str = "source_gt"):
    """All group maps of one label set: one per group with an exact structure; provenance also for the
    groups that the set covers only coarsely (unions, lesions), which get no map."""
    counts = value_counts(labels, where)
    written = exact_groups(label_set.label_values, space)
    coarse = {
        space.by_name(t).group
        for v in label_set.label_values.values()
        if v.kind in ("union", "lesion_of") and counts[v.value:v.value + 1].sum()
        for t in v.targets
    }
    maps, rows = {}, []
    for group in sorted(set(written) | coarse):
        data, group_rows = map_to_group(labels, label_set.label_values, group, space, where, origin, counts)
        if group in written:
            maps[group] = data
            rows += group_rows
        else:
            rows += [r for r in group_rows if r.origin in ("mapped_union", "lesion")]
    return maps, rows


def combine_group_maps(first: np.ndarray, second: np.ndarray, group: int, space: LabelSpace) -> np.ndarray:
    """Exact labels win over ignore, ignore over background; between two exact labels `second` wins."""
    ignore = ignore_label(group, space)
    rank = lambda m: np.where(m == ignore, 1, np.where(m > 0, 2, 0))  # noqa: E731
    return np.where(rank(second) >= rank(first), second, first).astype(np.uint8)


def _densify(labels, label_set: LabelSet, spacing, where: str, mode: str = INTERPOLATE):
    unannotated = [v.value for v in label_set.label_values.values() if v.kind == "unannotated"]
    if len(unannotated) != 1:
        raise MappingError(
            f"{where}: a sparse source needs exactly one label value marked {{unannotated: true}}, found {unannotated}"
        )
    if mode != INTERPOLATE:  # the unannotated value maps to `ignore` in every group (cadsflow.gt.mapping)
        keys, partial = annotated_slices(labels, unannotated[0])
        summary = {"unannotated_value": unannotated[0], "mode": mode, "key_slices": int(len(keys)),
                   "interpolated_slices": 0, "partial_slices": int(partial.sum())}
        log.info("%s: %s", where, summary)
        return labels, summary
    dense = densify_sparse_labels(labels, unannotated[0], spacing)
    summary = {
        "unannotated_value": unannotated[0],
        "mode": mode,
        "key_slices": int(len(dense.key_slices)),
        "interpolated_slices": dense.filled_slices,
        "partial_slices": dense.partial_slices,
    }
    log.info("%s: %s", where, summary)
    return dense.labels, summary


def prepare_batch_gt(
    volume_ids: list[str],
    source: Source | None,
    standardized_batch_dir: str | Path,
    out_batch_dir: str | Path,
    atlas: Atlas | None = None,
    registration: RegistrationSettings = RegistrationSettings(),
    space: LabelSpace | None = None,
    sparse_labels: str = INTERPOLATE,
) -> list[dict]:
    """prepare_volume_gt for each volume of a standardize batch (one source): out_batch_dir/{volume_id}/."""
    space = space or load_label_space()
    out = Path(out_batch_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for volume_id in volume_ids:
        records.append(
            prepare_volume_gt(volume_id, source, Path(standardized_batch_dir) / volume_id, out / volume_id,
                              atlas, registration, space, sparse_labels)
        )
    done = sum(r["status"] == "ok" for r in records)
    log.info("%s: %d of %d volumes with ground truth", out.name, done, len(records))
    return records
