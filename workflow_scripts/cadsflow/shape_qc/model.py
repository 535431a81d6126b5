"""The implicit shape prior: an auto-decoder MLP f(x, z) -> class logits, and the trained prior as one object.

Design after the paper's refs 45-46 (menzelab/implicit-shape-reconstruction, impl_recon/models/implicits.py),
written anew for several classes:
- the input of layer 0 is the shape's latent code z with the point's normalised coordinates x appended; x is
  appended again at the other ``coord_layers`` (the reference: [0, 4] of 8 layers);
- every hidden layer is Linear + ReLU; a layer without appended coordinates adds its output to its input
  (a residual step), one with coordinates does not (its input is wider);
- the last layer maps to one logit per class: background and each structure of the group (the reference
  predicts one occupancy logit; a group's label map needs all its classes at once, so the structures compete in
  a softmax and a voxel gets exactly one label, as in the label maps being scored).
Layer 0 applies its weight to z once per shape and to x once per point (the same affine map as on the
concatenation, without repeating z for every point).

``ShapePrior`` bundles the decoder with what scoring needs: the training codes (their mean starts every
reconstruction), the coordinate normalisation, the group's label ids and names, and the normalised extent of the
training foreground (the decoded box must cover it). It is saved as one torch file of plain tensors and values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from cadsflow.atomic import atomic_path

PRIOR_FORMAT = 1  # bump when the saved layout changes


class ShapeDecoder(nn.Module):
    """f(x, z): logits over `n_classes` classes at points x for shape codes z."""

    def __init__(self, latent_dim: int, hidden_width: int, num_layers: int, coord_layers, n_classes: int,
                 spatial_dim: int = 3):
        super().__init__()
        self.latent_dim = latent_dim
        self.spatial_dim = spatial_dim
        self.coord_layers = tuple(sorted(set(int(k) for k in coord_layers)))
        if 0 not in self.coord_layers:
            raise ValueError("the decoder needs the coordinates at layer 0")
        widths_in = [latent_dim] + [hidden_width] * (num_layers - 1)
        for k in self.coord_layers:
            widths_in[k] += spatial_dim
        self.hidden = nn.ModuleList(nn.Linear(widths_in[k], hidden_width) for k in range(num_layers - 1))
        self.output = nn.Linear(widths_in[-1], n_classes)

    def forward(self, latents: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """`latents` [B, L], `coords` [B, N, 3] -> logits [B, N, C]."""
        first = self.hidden[0]
        w_z, w_x = first.weight[:, : self.latent_dim], first.weight[:, self.latent_dim:]
        # relu_ in place on fresh layer outputs: the same values, one activation-sized copy fewer per layer
        # (autograd keeps what it needs: a linear layer's backward uses its input, not its output)
        features = torch.relu_((latents @ w_z.T + first.bias)[:, None, :] + coords @ w_x.T)
        for k in range(1, len(self.hidden)):
            if k in self.coord_layers:
                features = torch.relu_(self.hidden[k](torch.cat([features, coords], dim=-1)))
            else:
                features = features + torch.relu_(self.hidden[k](features))
        if len(self.hidden) in self.coord_layers:
            features = torch.cat([features, coords], dim=-1)
        return self.output(features)


@dataclass
class PriorMeta:
    """What a prior needs besides its weights to reconstruct a label map of its group."""

    group: int
    structures: list[str]  # structure names in label-id order: structures[k - 1] has label id k
    known: list[bool]  # whether any training map held the structure (the prior can only reconstruct those)
    latent_dim: int
    hidden_width: int
    num_layers: int
    coord_layers: list[int]
    coord_scale_mm: float
    extent_lo: list[float]  # normalised-coordinate box of all training foreground
    extent_hi: list[float]
    training_volumes: list[str]
    seed: int
    preset: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.structures) + 1


@dataclass
class ShapePrior:
    decoder: ShapeDecoder
    latents: torch.Tensor  # [n_training_shapes, latent_dim]
    meta: PriorMeta

    @property
    def mean_latent(self) -> torch.Tensor:
        """The mean training code: where every reconstruction starts."""
        return self.latents.mean(dim=0)


def build_decoder(meta: PriorMeta) -> ShapeDecoder:
    return ShapeDecoder(meta.latent_dim, meta.hidden_width, meta.num_layers, meta.coord_layers, meta.n_classes)


def save_prior(prior: ShapePrior, path: str | Path) -> None:
    """Write the prior atomically as a torch file of tensors and plain values (loadable with weights_only)."""
    payload = {
        "format": PRIOR_FORMAT,
        "decoder": {k: v.detach().cpu() for k, v in prior.decoder.state_dict().items()},
        "latents": prior.latents.detach().cpu(),
        "meta": asdict(prior.meta),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_prior(path: str | Path, device: str = "cpu") -> ShapePrior:
    """Read a prior written by save_prior; ValueError naming the file if it is not one."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read a shape prior ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != PRIOR_FORMAT:
        raise ValueError(f"{path}: not a shape prior of format {PRIOR_FORMAT}")
    meta = PriorMeta(**payload["meta"])
    decoder = build_decoder(meta).to(device)
    decoder.load_state_dict(payload["decoder"])
    decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    return ShapePrior(decoder=decoder, latents=payload["latents"].to(device), meta=meta)
