"""Scoring pseudo-labels: per structure, the 90th-percentile Hausdorff distance to the shape prior's reconstruction.

Online Methods 2.2: a prior trained on clean ground truth cannot reconstruct an erroneous pseudo-label, so the
distance between a pseudo-label and its reconstruction measures how implausible it is; the paper takes the
Hausdorff distance for its sensitivity to outliers, at the 90th percentile so that a few far-off voxels do not
count. Distances are the evaluation engine's (cadsflow.evaluation.surfaces: surface elements at voxel corners,
area-weighted percentile, the larger of both directions), on the crop around both masks.

One row per structure of the group (columns SCORE_COLUMNS, cadsflow.shape_qc.score_table), with a status:
- ok: both sides hold the structure; hd90_mm is the distance;
- missing_in_pseudolabel / missing_in_reconstruction: one side holds fewer than ``min_structure_voxels`` voxels
  of it. hd90_mm is then the diagonal of the image's bounding box (mm), the paper's penalty for a missed
  structure in its evaluation (Online Methods 5.1; cadsflow.evaluation.metrics.bounding_box_diagonal_mm): finite,
  and larger than any distance inside the image, so such a structure ranks as the worst of its column;
- absent: neither side holds it (outside the field of view); no score;
- failed: a structure the prior never saw in training is present in the pseudo-label (no score: the prior cannot
  judge it), or the whole volume failed.
A volume that cannot be scored at all gets a single row with structure ``*``: status failed (unreadable file,
not 3-D, values that are not the group's label ids, non-invertible affine) or absent (an empty pseudo-label: no
shape to reconstruct; where the group lies outside the field of view that is the right answer), with the reason.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from cadsflow.evaluation.metrics import bounding_box_diagonal_mm
from cadsflow.evaluation.surfaces import distance_method, robust_hausdorff, surface_distances
from cadsflow.shape_qc.model import ShapePrior
from cadsflow.shape_qc.presets import ShapeQcPreset
from cadsflow.shape_qc.reconstruct import Reconstruction, reconstruct
from cadsflow.shape_qc.score_table import (ABSENT, FAILED, MISSING_IN_PSEUDOLABEL, MISSING_IN_RECONSTRUCTION, OK,
                                          SCORE_COLUMNS, WHOLE_VOLUME, write_scores)
from cadsflow.shape_qc.sampling import LabelMapError, check_label_map, prepare, read_label_map
from cadsflow.shape_qc.train import volume_id_of

log = logging.getLogger(__name__)


def score_files(prior: ShapePrior, label_paths: Sequence[str | Path], preset: ShapeQcPreset, seed: int = 0,
                out: str | Path | None = None, volume_ids=None) -> pd.DataFrame:
    """Score every pseudo-label file (volume id from its name: <volume_id>.nii.gz); write the table if `out`."""
    ids = list(volume_ids) if volume_ids is not None else [volume_id_of(p) for p in label_paths]
    rows = []
    for volume_id, path in zip(ids, label_paths):
        start = time.perf_counter()
        rows.extend(score_file(prior, path, volume_id, preset, seed))
        log.info("scored %s in %.2f s", volume_id, time.perf_counter() - start)
    table = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    if out is not None:
        write_scores(table, out)
    return table


def score_file(prior: ShapePrior, path: str | Path, volume_id: str, preset: ShapeQcPreset, seed: int = 0
               ) -> list[dict]:
    """Rows of one pseudo-label file; an unusable file gives one failed row naming the file and the problem."""
    try:
        labels, affine = read_label_map(path, len(prior.meta.structures))
    except LabelMapError as exc:
        return [_volume_row(volume_id, FAILED, str(exc))]
    return score_label_map(prior, labels, affine, volume_id, preset, seed, name=str(path))[0]


def score_label_map(prior: ShapePrior, labels: np.ndarray, affine: np.ndarray, volume_id: str,
                    preset: ShapeQcPreset, seed: int = 0, name: str | None = None
                    ) -> tuple[list[dict], Reconstruction | None]:
    """Rows of one pseudo-label array (and its reconstruction, None when the volume could not be scored)."""
    name = name or volume_id
    try:
        labels = check_label_map(labels, affine, len(prior.meta.structures), name)
    except LabelMapError as exc:
        return [_volume_row(volume_id, FAILED, str(exc))], None
    if not labels.any():
        reason = f"{name}: empty pseudo-label (no voxel holds a label of group {prior.meta.group}): nothing to judge"
        return [_volume_row(volume_id, ABSENT, reason)], None
    vol = prepare(labels, affine, prior.meta.coord_scale_mm, name)
    recon = reconstruct(prior, vol, preset, volume_rng(seed, volume_id))
    rows = structure_rows(volume_id, labels, recon.labels, vol.spacing, prior, preset)
    return rows, recon


def structure_rows(volume_id: str, pseudo: np.ndarray, recon: np.ndarray, spacing, prior: ShapePrior,
                   preset: ShapeQcPreset) -> list[dict]:
    """One row per structure of the group, comparing the pseudo-label with its reconstruction."""
    penalty = bounding_box_diagonal_mm(pseudo.shape, spacing)
    counts_pl = np.bincount(pseudo.ravel(), minlength=len(prior.meta.structures) + 1)
    counts_rec = np.bincount(recon.ravel(), minlength=len(prior.meta.structures) + 1)
    boxes_pl = ndimage.find_objects(pseudo, max_label=len(prior.meta.structures))
    boxes_rec = ndimage.find_objects(recon, max_label=len(prior.meta.structures))
    rows = []
    for k, structure in enumerate(prior.meta.structures, start=1):
        in_pl = counts_pl[k] >= preset.min_structure_voxels
        in_rec = counts_rec[k] >= preset.min_structure_voxels
        if not prior.meta.known[k - 1]:
            if in_pl:
                rows.append(_row(volume_id, structure, np.nan, FAILED,
                                 "no training map of the prior holds this structure: it cannot be judged"))
            else:
                rows.append(_row(volume_id, structure, np.nan, ABSENT, "absent in the pseudo-label"))
        elif in_pl and in_rec:
            box = _union_box(boxes_pl[k - 1], boxes_rec[k - 1])
            hd = structure_hd(pseudo[box] == k, recon[box] == k, spacing, preset.hd_percentile)
            rows.append(_row(volume_id, structure, hd, OK, ""))
        elif in_pl:
            rows.append(_row(volume_id, structure, penalty, MISSING_IN_RECONSTRUCTION,
                             f"{counts_pl[k]} voxels in the pseudo-label, {counts_rec[k]} in the reconstruction: "
                             "score is the image diagonal"))
        elif in_rec:
            rows.append(_row(volume_id, structure, penalty, MISSING_IN_PSEUDOLABEL,
                             f"{counts_pl[k]} voxels in the pseudo-label, {counts_rec[k]} in the reconstruction: "
                             "score is the image diagonal"))
        else:
            rows.append(_row(volume_id, structure, np.nan, ABSENT, "absent in pseudo-label and reconstruction"))
    return rows


def structure_hd(a: np.ndarray, b: np.ndarray, spacing, percentile: float, method: str | None = None) -> float:
    """Symmetric `percentile` Hausdorff distance (mm) between two non-empty masks on one grid.

    `method` is one of cadsflow.evaluation.surfaces' methods ("local", "kdtree", "edt" give the same value, and
    "maurer" too where maurer_is_exact holds); None picks the cheaper exact one for these masks (distance_method),
    so the choice never changes a score.
    """
    method = method or distance_method(a, b, spacing)
    return robust_hausdorff(surface_distances(a, b, spacing, method=method), percentile)


def volume_rng(seed: int, volume_id: str) -> np.random.Generator:
    """A volume's own random stream: the same for a volume whatever shard or order it is scored in."""
    return np.random.default_rng([int(seed), zlib.crc32(volume_id.encode())])


# -- helpers ---------------------------------------------------------------------------------------------------


def _row(volume_id: str, structure: str, hd: float, status: str, reason: str) -> dict:
    return {"volume_id": volume_id, "structure": structure, "hd90_mm": float(hd), "status": status, "reason": reason}


def _volume_row(volume_id: str, status: str, reason: str) -> dict:
    return _row(volume_id, WHOLE_VOLUME, np.nan, status, " ".join(reason.split()))


def _union_box(a, b):
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))
