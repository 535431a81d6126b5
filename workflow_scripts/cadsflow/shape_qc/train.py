"""Training the shape prior of one group: the decoder and one latent code per ground-truth label map, jointly.

As in the reference (menzelab/implicit-shape-reconstruction, impl_recon/train.py; DeepSDF's auto-decoder):
- codes start as N(0, 1/sqrt(latent_dim)) and are optimised with their own learning rate next to the decoder's
  (Adam, two parameter groups; the decoder's rate is scaled by the batch size as the reference scales it);
- the loss is a classification term on sampled points plus a soft Dice term (the reference: BCE + Dice for one
  class; here cross-entropy + multi-class soft Dice) plus the latent regulariser mean(|z|^2), whose weight ramps
  in over the first ``latent_reg_warmup`` epochs;
- every step draws fresh points per label map (sampling.py: half near boundaries).
Only fully annotated ground-truth maps belong in the training set: an unannotated structure would be learnt as
absent. Empty maps (no structure of the group in the field of view) carry no shape and are skipped.

Deterministic given the seed: decoder initialisation, codes and point draws come from generators seeded here
(the caller's global torch RNG state is restored afterwards).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cadsflow.labels import load_label_space
from cadsflow.shape_qc.adam import Adam
from cadsflow.shape_qc.model import PriorMeta, ShapePrior, build_decoder
from cadsflow.shape_qc.presets import ShapeQcPreset
from cadsflow.shape_qc.sampling import (LabelMapError, LabelVolume, foreground_extent, ignore_id, prepare,
                                       read_label_map, sample_points, structure_mask)

log = logging.getLogger(__name__)
LOG_EVERY_EPOCHS = 25


@dataclass
class TrainingStats:
    seconds: float = 0.0
    steps: int = 0
    losses: list[float] = field(default_factory=list)  # mean loss of each epoch
    skipped: list[str] = field(default_factory=list)  # volume ids of empty maps


def group_structures(group: int) -> list[str]:
    """The group's structure names in label-id order (label id k is entry k - 1)."""
    by_id = {label_id: name for name, label_id in load_label_space().group_label_map(group).items()}
    return [by_id[k] for k in range(1, len(by_id) + 1)]


def train_prior_from_files(label_paths: Sequence[str | Path], group: int, preset: ShapeQcPreset, seed: int = 0,
                           threads: int | None = None, device: str | None = None, volume_ids=None,
                           preset_name: str = "") -> tuple[ShapePrior, TrainingStats]:
    """Read the group's ground-truth label maps and train its prior (see train_prior)."""
    structures = group_structures(group)
    ids = list(volume_ids) if volume_ids is not None else [volume_id_of(p) for p in label_paths]
    maps = []
    for volume_id, path in zip(ids, label_paths):
        labels, affine = read_label_map(path, len(structures), allow_ignore=True)  # ground truth: `ignore` = unknown
        maps.append((volume_id, labels, affine))
    return train_prior(maps, group, structures, preset, seed, threads=threads, device=device,
                       preset_name=preset_name)


def train_prior(label_maps: Sequence[tuple[str, np.ndarray, np.ndarray]], group: int, structures: Sequence[str],
                preset: ShapeQcPreset, seed: int = 0, threads: int | None = None, device: str | None = None,
                preset_name: str = "") -> tuple[ShapePrior, TrainingStats]:
    """Train decoder and codes on (volume_id, labels, affine) maps whose labels are the group's ids (and its `ignore`
    id, sampling.ignore_id(len(structures)), where the truth is unknown: no point is drawn there; see sampling.py)."""
    if threads:
        torch.set_num_threads(threads)
    device = device or preset.device
    stats = TrainingStats()
    volumes, ids = _prepared(label_maps, preset, stats, len(structures))
    meta = _meta(volumes, ids, group, structures, preset, seed, preset_name)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = build_decoder(meta).to(device)
        initial = torch.randn(len(volumes), preset.latent_dim) / np.sqrt(preset.latent_dim)  # DeepSDF / [ref]
        latents = torch.nn.Parameter(initial.to(device))
    optimizer = Adam([
        {"params": decoder.parameters(), "lr": preset.lr_decoder * preset.batch_size},
        {"params": [latents], "lr": preset.lr_latents},
    ])
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    decoder.train()
    for epoch in range(preset.epochs):
        for group, base_lr in zip(optimizer.param_groups, base_lrs):  # torch's LambdaLR: base lr x factor(epoch)
            group["lr"] = base_lr * lr_factor(epoch, preset)
        reg_weight = preset.latent_reg * min(1.0, epoch / max(1, preset.latent_reg_warmup))
        epoch_losses = []
        order = rng.permutation(len(volumes))
        for first in range(0, len(order), preset.batch_size):
            batch = order[first:first + preset.batch_size]
            coords, labels = _batch_points(volumes, batch, preset.points_per_example, preset, rng, device)
            codes = latents[torch.as_tensor(batch, device=device)]
            logits = decoder(codes, coords)
            loss = shape_loss(logits, labels, preset.dice_weight)
            loss = loss + reg_weight * codes.square().sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_losses.append(float(loss.detach()))
            stats.steps += 1
        stats.losses.append(float(np.mean(epoch_losses)))
        if (epoch + 1) % LOG_EVERY_EPOCHS == 0 or epoch + 1 == preset.epochs:
            log.info("group %s epoch %d/%d loss %.4f (%.1f s)", group, epoch + 1, preset.epochs, stats.losses[-1],
                     time.perf_counter() - start)
    decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    stats.seconds = time.perf_counter() - start
    return ShapePrior(decoder=decoder, latents=latents.detach(), meta=meta), stats


def shape_loss(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Cross-entropy over points plus `dice_weight` x (1 - soft Dice of the foreground classes each shape holds).

    `logits` [B, N, C], `labels` [B, N] (class ids). Soft Dice per shape and class, averaged over the foreground
    classes present in that shape's points (an absent class has no overlap to reward).
    """
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    if dice_weight == 0:
        return ce
    probs = logits.softmax(dim=-1)[..., 1:]
    onehot = F.one_hot(labels, logits.shape[-1])[..., 1:].to(probs.dtype)
    overlap = (probs * onehot).sum(dim=1)
    sizes = probs.sum(dim=1) + onehot.sum(dim=1)
    present = onehot.sum(dim=1) > 0
    if not present.any():
        return ce
    dice = (2.0 * overlap / sizes.clamp_min(1e-6))[present].mean()
    return ce + dice_weight * (1.0 - dice)


def lr_factor(epoch: int, preset: ShapeQcPreset) -> float:
    """Learning-rate multiplier of an epoch: cosine from 1 down to lr_final_fraction (1: constant, as [ref])."""
    progress = epoch / max(1, preset.epochs - 1)
    return preset.lr_final_fraction + (1.0 - preset.lr_final_fraction) * 0.5 * (1.0 + np.cos(np.pi * progress))


def volume_id_of(path: str | Path) -> str:
    """The volume id a label map's file name carries: <volume_id>.nii.gz (the pseudo-label layout)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


# -- helpers ---------------------------------------------------------------------------------------------------


def _prepared(label_maps, preset: ShapeQcPreset, stats: TrainingStats, n_structures: int
              ) -> tuple[list[LabelVolume], list[str]]:
    volumes, ids = [], []
    unknown = ignore_id(n_structures)
    for volume_id, labels, affine in label_maps:
        if not structure_mask(labels, unknown).any():
            log.warning("training map %s holds no structure of the group: skipped", volume_id)
            stats.skipped.append(volume_id)
            continue
        volumes.append(prepare(labels, affine, preset.coord_scale_mm, volume_id, unknown=unknown))
        ids.append(volume_id)
    if not volumes:
        raise LabelMapError("no training label map holds any structure of the group")
    return volumes, ids


def _meta(volumes, ids, group, structures, preset: ShapeQcPreset, seed: int, preset_name: str) -> PriorMeta:
    present = np.zeros(len(structures) + 1, dtype=bool)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for vol in volumes:
        counts = np.bincount(vol.labels.ravel(), minlength=len(structures) + 1)
        present |= counts[: len(structures) + 1] > 0
        vlo, vhi = foreground_extent(vol)
        lo, hi = np.minimum(lo, vlo), np.maximum(hi, vhi)
    return PriorMeta(
        group=int(group), structures=list(structures), known=[bool(v) for v in present[1:]],
        latent_dim=preset.latent_dim, hidden_width=preset.hidden_width, num_layers=preset.num_layers,
        coord_layers=list(preset.coord_layers), coord_scale_mm=preset.coord_scale_mm,
        extent_lo=[float(v) for v in lo], extent_hi=[float(v) for v in hi], training_volumes=list(ids),
        seed=int(seed), preset=preset_name,
    )


def _batch_points(volumes, batch, n, preset: ShapeQcPreset, rng, device) -> tuple[torch.Tensor, torch.Tensor]:
    coords, labels = zip(*(sample_points(volumes[i], n, preset.boundary_fraction, preset.boundary_jitter_mm, rng)
                           for i in batch))
    return (torch.from_numpy(np.stack(coords)).to(device), torch.from_numpy(np.stack(labels)).to(device))
