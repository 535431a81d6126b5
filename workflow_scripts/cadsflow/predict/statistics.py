"""Per-structure statistics of one prediction: volume (ml) and mean / median intensity (HU) -> statistics.json.

Each structure is measured on its own group's label map on the input's grid, so a parent keeps its whole extent
where the combined map shows a finer structure on top (`heart` includes its chambers). The volume is the voxel
count times the voxel volume |det(affine[:3, :3])| / 1000 (mm^3 -> ml); the intensities are the input image's own
values (HU after the file's rescale), not the standardized, resampled ones. Every structure of the predicted groups
is listed: an absent one has 0 voxels, 0.0 ml and null intensities.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cadsflow.atomic import write_text
from cadsflow.labels import LabelSpace, load_label_space

MM3_PER_ML = 1000.0


def voxel_volume_ml(affine: np.ndarray) -> float:
    return abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / MM3_PER_ML


def structure_statistics(group_maps: dict[int, np.ndarray], image: np.ndarray, affine: np.ndarray,
                         space: LabelSpace | None = None) -> dict:
    """{"voxel_volume_ml": v, "structures": {name: {global_id, group, voxels, volume_ml, mean_hu, median_hu}}},
    structures in global-id order."""
    space = space or load_label_space()
    voxel_ml = voxel_volume_ml(affine)
    rows = []
    for group, labels in sorted(group_maps.items()):
        if labels.shape != image.shape:
            raise ValueError(f"group {group} label map {labels.shape} is not on the image grid {image.shape}")
        members = space.group(group)
        size = max(int(labels.max(initial=0)), max(s.label_id for s in members)) + 1
        counts = np.bincount(labels.ravel(), minlength=size)
        sums = np.bincount(labels.ravel(), weights=image.ravel().astype(np.float64), minlength=size)
        medians = label_medians(image, labels, size)
        for s in members:
            n = int(counts[s.label_id])
            rows.append((s.global_id, s.name, {
                "global_id": s.global_id, "group": group, "voxels": n, "volume_ml": n * voxel_ml,
                "mean_hu": float(sums[s.label_id] / n) if n else None,
                "median_hu": float(medians[s.label_id]) if n else None,
            }))
    return {"voxel_volume_ml": voxel_ml, "structures": {name: row for _, name, row in sorted(rows)}}


def label_medians(image: np.ndarray, labels: np.ndarray, size: int) -> np.ndarray:
    """Median of `image` over each label value 0..size-1 (numpy's median: the mean of the two middle values for an
    even count; nan for an absent label). Integer images: one histogram per label (linear time, exact); others:
    one sort of the labelled voxels by (label, value). scipy.ndimage.median took 112 s on a 512x512x300 CT here."""
    mask = labels > 0
    values, owners = image[mask], labels[mask].astype(np.int64)
    counts = np.bincount(owners, minlength=size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lower = starts + (counts - 1) // 2  # positions of the two middle values in the (label, value) order
    upper = starts + counts // 2
    present = counts > 0
    medians = np.full(size, np.nan)
    if not present.any():
        return medians
    if np.issubdtype(values.dtype, np.integer):
        low = int(values.min())
        span = int(values.max()) - low + 1
        histogram = np.bincount(owners * span + (values.astype(np.int64) - low), minlength=size * span)
        cumulative = np.cumsum(histogram)  # position k of the ordered values lies in the bin where cumulative > k
        pick = lambda positions: np.searchsorted(cumulative, positions, side="right") % span + low  # noqa: E731
    else:
        ordered = values[np.lexsort((values, owners))]
        pick = lambda positions: ordered[positions]  # noqa: E731
    medians[present] = (pick(lower[present]).astype(np.float64) + pick(upper[present])) / 2.0
    return medians


def write_statistics(statistics: dict, path: str | Path) -> None:
    write_text(path, json.dumps(statistics, indent=1) + "\n")
