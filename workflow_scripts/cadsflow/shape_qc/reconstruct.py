"""Reconstructing a label map with the frozen prior: fit a new code, then decode it on the label map's own grid.

Fitting (as the reference's optimize_latents, impl_recon/train.py): the decoder is frozen; a new code starts at
the mean training code and is optimised with Adam for ``recon_steps`` steps against points drawn from the label
map being reconstructed (the training loss and regulariser, with the same warm-up). A clean shape is then
reproduced closely; an implausible one cannot be, because the decoder only knows the training shapes.

Decoding on the grid, fast: the reconstruction is needed at every voxel of the label map's grid (so that it shares
the field of view of the pseudo-label it is compared with), but not every voxel needs the decoder.
- Only a box is decoded: the pseudo-label's foreground box joined with the prior's training extent placed in this
  volume's frame, grown by ``decode_margin_mm``; the reconstruction is background outside it.
- Inside the box every ``decode_stride``-th voxel is decoded first; a voxel takes the label of its coarse voxel
  unless the labels around that coarse voxel (its 3x3x3 coarse neighbourhood) differ, and those voxels are
  decoded exactly (coarse_to_fine; the coarse voxels themselves are not decoded twice). With stride 1 every
  voxel of the box is decoded. A structure thinner than the stride can be missed between coarse voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from cadsflow.shape_qc.adam import Adam
from cadsflow.shape_qc.model import ShapePrior
from cadsflow.shape_qc.presets import ShapeQcPreset
from cadsflow.shape_qc.sampling import LabelVolume, sample_points
from cadsflow.shape_qc.train import shape_loss

FIT_CHECK_POINTS = 8192  # points of the fixed sample on which the fit's start and end losses are reported


@dataclass
class Reconstruction:
    labels: np.ndarray  # class ids on the label map's grid
    latent: np.ndarray
    loss_initial: float  # data loss of the mean code on a fixed point sample of the label map
    loss_final: float  # the same for the fitted code


def reconstruct(prior: ShapePrior, vol: LabelVolume, preset: ShapeQcPreset, rng: np.random.Generator
                ) -> Reconstruction:
    """Fit a code to `vol` and decode it on `vol`'s grid."""
    check = sample_points(vol, FIT_CHECK_POINTS, preset.boundary_fraction, preset.boundary_jitter_mm, rng)
    latent = fit_latent(prior, vol, preset, rng)
    start = data_loss(prior, prior.mean_latent, *check)
    end = data_loss(prior, latent, *check)
    labels = decode_on_grid(prior, latent, vol, preset)
    return Reconstruction(labels=labels, latent=latent.cpu().numpy(), loss_initial=start, loss_final=end)


def fit_latent(prior: ShapePrior, vol: LabelVolume, preset: ShapeQcPreset, rng: np.random.Generator
               ) -> torch.Tensor:
    """The code that best explains `vol`'s points under the frozen decoder, from the mean code."""
    device = prior.latents.device
    latent = torch.nn.Parameter(prior.mean_latent.detach().clone()[None, :])
    optimizer = Adam([{"params": [latent], "lr": preset.recon_lr}])
    for step in range(preset.recon_steps):
        coords, labels = sample_points(vol, preset.recon_points, preset.boundary_fraction, preset.boundary_jitter_mm,
                                       rng)
        logits = prior.decoder(latent, torch.from_numpy(coords)[None].to(device))
        loss = shape_loss(logits, torch.from_numpy(labels)[None].to(device), preset.dice_weight)
        reg_weight = preset.latent_reg * min(1.0, step / max(1, preset.latent_reg_warmup))
        loss = loss + reg_weight * latent.square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return latent.detach()[0]


def data_loss(prior: ShapePrior, latent: torch.Tensor, coords: np.ndarray, labels: np.ndarray) -> float:
    """The fitting loss (without regulariser) of one code on given points."""
    device = prior.latents.device
    with torch.no_grad():
        logits = prior.decoder(latent.reshape(1, -1).to(device), torch.from_numpy(coords)[None].to(device))
        return float(shape_loss(logits, torch.from_numpy(labels)[None].to(device), 0.0))


def decode_on_grid(prior: ShapePrior, latent: torch.Tensor, vol: LabelVolume, preset: ShapeQcPreset) -> np.ndarray:
    """Class ids of the decoded code at every voxel of `vol`'s grid (background outside the decoded box)."""
    out = np.zeros(vol.shape, dtype=vol.labels.dtype)
    box = decode_box(prior, vol, preset.decode_margin_mm)
    if box is None:
        return out
    lo, hi = box
    stride = preset.decode_stride
    coarse_axes = [np.arange(a, b, stride) for a, b in zip(lo, hi)]
    coarse = _decode_voxels(prior, latent, vol, np.meshgrid(*coarse_axes, indexing="ij"), preset.decode_chunk)
    if stride == 1:
        out[tuple(slice(a, b) for a, b in zip(lo, hi))] = coarse
        return out
    fine, redo = coarse_to_fine(coarse, stride, tuple(b - a for a, b in zip(lo, hi)))
    redo = np.nonzero(redo)
    if len(redo[0]):
        ijk = [r + a for r, a in zip(redo, lo)]
        fine[redo] = _decode_voxels(prior, latent, vol, ijk, preset.decode_chunk)
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = fine
    return out


def coarse_to_fine(coarse: np.ndarray, stride: int, fine_shape) -> tuple[np.ndarray, np.ndarray]:
    """Fine labels from coarse ones (every `stride`-th voxel), and the fine voxels whose label must be decoded.

    A fine voxel takes the label of its coarse voxel (index // stride per axis). It is uncertain when that coarse
    voxel's 3x3x3 coarse neighbourhood holds more than one label, unless it is the coarse voxel itself (index a
    multiple of the stride on every axis): that one was decoded already.
    """
    unsure = ndimage.maximum_filter(coarse, size=3) != ndimage.minimum_filter(coarse, size=3)
    up = np.ix_(*(np.arange(n) // stride for n in fine_shape))
    fine = coarse[up]
    redo = unsure[up]
    redo[np.ix_(*(np.arange(n) % stride == 0 for n in fine_shape))] = False
    return fine, redo


def decode_box(prior: ShapePrior, vol: LabelVolume, margin_mm: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Voxel box [lo, hi) to decode: foreground box and training extent (in this frame), grown, clipped."""
    shape = np.asarray(vol.shape)
    idx = np.nonzero(vol.labels)
    lo = np.array([i.min() for i in idx], dtype=float)
    hi = np.array([i.max() for i in idx], dtype=float)
    corners = np.array(np.meshgrid(*zip(prior.meta.extent_lo, prior.meta.extent_hi), indexing="ij")).reshape(3, -1).T
    extent = vol.to_index(corners)
    lo = np.minimum(lo, extent.min(axis=0))
    hi = np.maximum(hi, extent.max(axis=0))
    margin = margin_mm / vol.spacing
    lo = np.clip(np.floor(lo - margin), 0, shape).astype(int)
    hi = np.clip(np.ceil(hi + margin) + 1, 0, shape).astype(int)
    if np.any(hi <= lo):
        return None
    return lo, hi


def _decode_voxels(prior: ShapePrior, latent: torch.Tensor, vol: LabelVolume, ijk, chunk: int) -> np.ndarray:
    """Arg-max class of the decoder at voxel indices `ijk` (three arrays of one shape); same shape back."""
    shape = np.shape(ijk[0])
    points = np.stack([np.ravel(a) for a in ijk], axis=1).astype(float)
    device = prior.latents.device
    code = latent.reshape(1, -1).to(device)
    labels = np.empty(len(points), dtype=np.int64)
    with torch.inference_mode():
        for first in range(0, len(points), chunk):
            coords = torch.from_numpy(vol.normalise(points[first:first + chunk]))[None].to(device)
            labels[first:first + chunk] = prior.decoder(code, coords)[0].argmax(dim=-1).cpu().numpy()
    return labels.reshape(shape).astype(vol.labels.dtype)
