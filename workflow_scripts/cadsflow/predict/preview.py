"""preview.png: three orthogonal views of the CT (axial, coronal, sagittal) with the combined label map overlaid.

The views cut through the centroid of the labelled voxels (the volume's centre when nothing is labelled) and are
drawn in radiological convention whatever the input's voxel order: the volume is first put in RAS voxel order
(a lossless axis permutation/flip), then axial views show the patient's right on the image's left and anterior at
the top, coronal views the right on the left and superior at the top, sagittal views anterior on the left and
superior at the top. Pixels keep their physical aspect ratio. Grey levels use the authors' snapshot window
(murong-xu/CADS utils/snapshot.py: -500..1300 HU), labels a fixed colour per global id at half opacity (as there).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from cadsflow.atomic import atomic_path

WINDOW_HU = (-500.0, 1300.0)  # murong-xu/CADS utils/snapshot.py wdw_sbone
OVERLAY_ALPHA = 0.5  # murong-xu/CADS utils/snapshot.py
N_GLOBAL_IDS = 168  # background + 167 structures
DPI = 100
PANEL_INCHES = 4.0
VIEWS = ("axial", "coronal", "sagittal")


def preview_centre(labels_ras: np.ndarray) -> tuple[int, int, int]:
    """The voxel the three views cut through: the labelled voxels' centroid, else the volume's centre."""
    points = np.nonzero(labels_ras)
    if not points[0].size:
        return tuple(int(n // 2) for n in labels_ras.shape)
    return tuple(int(round(float(p.mean()))) for p in points)


def to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The array in RAS voxel order and the voxel sizes along its axes (mm)."""
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return ras, zooms[np.argsort(ornt[:, 0])]


def view_planes(volume_ras: np.ndarray, centre) -> dict[str, np.ndarray]:
    """The three 2-D views of a RAS-ordered volume through `centre`, rows top to bottom as displayed."""
    x, y, z = centre
    return {
        "axial": volume_ras[::-1, ::-1, z].T,  # rows: anterior -> posterior; columns: right -> left
        "coronal": volume_ras[::-1, y, ::-1].T,  # rows: superior -> inferior; columns: right -> left
        "sagittal": volume_ras[x, ::-1, ::-1].T,  # rows: superior -> inferior; columns: anterior -> posterior
    }


def view_aspects(zooms_ras) -> dict[str, float]:
    """Row spacing / column spacing of each view (matplotlib's `aspect`)."""
    sx, sy, sz = (float(z) for z in zooms_ras)
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}


def label_colours() -> np.ndarray:
    """RGBA per global id (0 transparent): tab20's colours cycled, fixed for every run."""
    from matplotlib import colormaps

    base = np.asarray(colormaps["tab20"].colors)
    colours = np.ones((N_GLOBAL_IDS, 4))
    colours[:, :3] = base[np.arange(N_GLOBAL_IDS) % len(base)]
    colours[0, 3] = 0.0
    return colours


def write_preview(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, out_path: str | Path,
                  title: str = "") -> tuple[int, int, int]:
    """Write the preview PNG of `image` (HU) with `labels` (global ids, same grid); return the RAS centre voxel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap, Normalize

    if image.shape != labels.shape:
        raise ValueError(f"preview: image {image.shape} and label map {labels.shape} are not on one grid")
    image_ras, zooms = to_ras(image, affine)
    labels_ras, _ = to_ras(labels, affine)
    centre = preview_centre(labels_ras)
    grey, overlay = view_planes(image_ras, centre), view_planes(labels_ras, centre)
    aspects = view_aspects(zooms)
    colours = ListedColormap(label_colours())
    fig, axes = plt.subplots(1, len(VIEWS), figsize=(PANEL_INCHES * len(VIEWS), PANEL_INCHES), dpi=DPI)
    fig.patch.set_facecolor("black")
    for ax, view in zip(axes, VIEWS):
        ax.imshow(grey[view], cmap="gray", norm=Normalize(*WINDOW_HU, clip=True), aspect=aspects[view],
                  interpolation="nearest")
        ax.imshow(np.ma.masked_equal(overlay[view], 0), cmap=colours, vmin=0, vmax=N_GLOBAL_IDS - 1,
                  alpha=OVERLAY_ALPHA, aspect=aspects[view], interpolation="nearest")
        ax.set_title(view, color="white")
        ax.axis("off")
    if title:
        fig.suptitle(title, color="white")
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, facecolor=fig.get_facecolor(), format="png")
    plt.close(fig)
    return centre
