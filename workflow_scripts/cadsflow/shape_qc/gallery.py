"""The QC gallery: the worst-scored volumes of a group as one PNG, for a person to check what the QC excludes.

One row per volume (worst first), three orthogonal slices (sagittal, coronal, axial) through the centroid of the
structure that made the image's score worst: the CT in grey, the pseudo-label's outline of that structure in red
and the reconstruction's in cyan. The reconstruction is recomputed with the scoring's seed, so it is the one that
was scored (scoring is deterministic per volume). matplotlib's Agg backend; the file is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cadsflow.atomic import atomic_path  # noqa: E402
from cadsflow.imageio import VolumeReadError, read_volume  # noqa: E402
from cadsflow.shape_qc.exclude import SCORED  # noqa: E402
from cadsflow.shape_qc.model import ShapePrior  # noqa: E402
from cadsflow.shape_qc.presets import ShapeQcPreset  # noqa: E402
from cadsflow.shape_qc.reconstruct import reconstruct  # noqa: E402
from cadsflow.shape_qc.sampling import prepare, read_label_map  # noqa: E402
from cadsflow.shape_qc.score import volume_rng  # noqa: E402

CT_WINDOW_HU = (-250.0, 350.0)  # soft-tissue window
PSEUDO_COLOUR, RECON_COLOUR = "#e41a1c", "#00d5ff"
DPI = 100
VIEWS = (("sagittal", 0), ("coronal", 1), ("axial", 2))  # name, the RAS axis held fixed


@dataclass(frozen=True)
class GalleryVolume:
    volume_id: str
    label_path: Path
    image_path: Path | None


def write_gallery(prior: ShapePrior, images: pd.DataFrame, volumes: Sequence[GalleryVolume], out: str | Path,
                  preset: ShapeQcPreset, seed: int = 0, n: int | None = None) -> list[str]:
    """Draw the `n` worst scored volumes of the image table (exclude.image_scores); return their ids."""
    n = preset.gallery_volumes if n is None else n
    by_id = {v.volume_id: v for v in volumes}
    worst = images[(images["state"] == SCORED) & images["volume_id"].isin(by_id)].sort_values("rank").head(n)
    shown = list(worst["volume_id"])
    fig, axes = plt.subplots(max(1, len(shown)), 3, figsize=(10.5, 3.4 * max(1, len(shown))), squeeze=False)
    if not shown:
        for ax in axes[0]:
            ax.axis("off")
        axes[0][1].text(0.5, 0.5, "no scored volume to show", ha="center", va="center")
    for row, (_, record) in zip(axes, worst.iterrows()):
        _draw_volume(row, prior, by_id[record["volume_id"]], record, preset, seed)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return shown


def slice_centre(pseudo: np.ndarray, recon: np.ndarray, label_id: int) -> tuple[int, int, int]:
    """Voxel through which to cut: the structure's centroid in the pseudo-label, else in the reconstruction,
    else the grid's centre."""
    for labels in (pseudo, recon):
        idx = np.nonzero(labels == label_id)
        if len(idx[0]):
            return tuple(int(round(i.mean())) for i in idx)
    return tuple(s // 2 for s in pseudo.shape)


# -- helpers ---------------------------------------------------------------------------------------------------


def _draw_volume(axes, prior: ShapePrior, volume: GalleryVolume, record, preset: ShapeQcPreset, seed: int) -> None:
    labels, affine = read_label_map(volume.label_path, len(prior.meta.structures))
    vol = prepare(labels, affine, prior.meta.coord_scale_mm, str(volume.label_path))
    recon = reconstruct(prior, vol, preset, volume_rng(seed, volume.volume_id)).labels
    structure = record["worst_structure"]
    label_id = prior.meta.structures.index(structure) + 1
    ct = _read_ct(volume.image_path, labels.shape)
    centre = slice_centre(labels, recon, label_id)
    spacing = vol.spacing
    for ax, (view, axis) in zip(axes, VIEWS):
        index = [slice(None)] * 3
        index[axis] = centre[axis]
        index = tuple(index)
        shown_axes = [a for a in range(3) if a != axis]
        extent = (0, labels.shape[shown_axes[0]] * spacing[shown_axes[0]],
                  0, labels.shape[shown_axes[1]] * spacing[shown_axes[1]])
        if ct is not None:
            ax.imshow(ct[index].T, cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], origin="lower",
                      extent=extent, interpolation="nearest")
        else:
            ax.imshow(np.zeros(labels[index].T.shape), cmap="gray", origin="lower", extent=extent)
        _outline(ax, labels[index] == label_id, extent, PSEUDO_COLOUR)
        _outline(ax, recon[index] == label_id, extent, RECON_COLOUR)
        ax.set_title(f"{view} {centre[axis]}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel(f"{volume.volume_id}\nrank {int(record['rank'])}", fontsize=8)
    axes[1].set_title(f"{structure}: hd90 {record['worst_hd90_mm']:.1f} mm ({record['worst_status']})\n"
                      f"red pseudo-label, cyan reconstruction; coronal {centre[1]}", fontsize=8)


def _outline(ax, mask: np.ndarray, extent, colour: str) -> None:
    if mask.any() and not mask.all():
        xs = _voxel_centres(extent[0], extent[1], mask.shape[0])
        ys = _voxel_centres(extent[2], extent[3], mask.shape[1])
        ax.contour(xs, ys, mask.T.astype(float), levels=[0.5], colors=[colour], linewidths=1.0)


def _voxel_centres(lo: float, hi: float, n: int) -> np.ndarray:
    step = (hi - lo) / n
    return lo + step * (np.arange(n) + 0.5)


def _read_ct(path: Path | None, shape) -> np.ndarray | None:
    """The CT on the label map's grid, or None when there is none (the outlines are drawn on black)."""
    if path is None:
        return None
    try:
        data = read_volume(path).data
    except VolumeReadError:
        return None
    return data if data.shape == tuple(shape) else None
