"""The shape-QC presets (config/shape_qc.yaml) as one typed, validated object.

Every size, step count and rate of the shape prior comes from a preset, so the paper and demo runs differ only in
data. ``load_preset`` rejects unknown and missing keys with the file and preset named, so a misspelt key in the
YAML stops a run instead of silently falling back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import yaml

from cadsflow.paths import CONFIG_DIR

SHAPE_QC_YAML = CONFIG_DIR / "shape_qc.yaml"


@dataclass(frozen=True)
class ShapeQcPreset:
    """One preset of config/shape_qc.yaml; the YAML's header says what each field means and where it comes from."""

    latent_dim: int
    hidden_width: int
    num_layers: int
    coord_layers: tuple[int, ...]
    coord_scale_mm: float
    points_per_example: int
    boundary_fraction: float
    boundary_jitter_mm: float
    batch_size: int
    epochs: int
    lr_decoder: float
    lr_latents: float
    lr_final_fraction: float
    latent_reg: float
    latent_reg_warmup: int
    dice_weight: float
    recon_steps: int
    recon_lr: float
    recon_points: int
    decode_stride: int
    decode_margin_mm: float
    decode_chunk: int
    hd_percentile: float
    min_structure_voxels: int
    combine: str
    robust_z_floor_mm: float
    exclude_fraction: float
    gallery_volumes: int
    device: str
    threads: int

    def with_overrides(self, **overrides) -> ShapeQcPreset:
        """A copy with some fields replaced (benchmarks and tests shrink a preset this way)."""
        return _validated(replace(self, **overrides), "overrides")


def load_preset(name: str, path: str | Path = SHAPE_QC_YAML) -> ShapeQcPreset:
    """Read preset `name` from the shape-QC YAML; ValueError naming the file, preset and key on any defect."""
    path = Path(path)
    presets = yaml.safe_load(path.read_text()) or {}
    if name not in presets:
        raise ValueError(f"{path}: no shape-QC preset {name!r}; presets: {sorted(presets)}")
    values = dict(presets[name])
    expected = {f.name for f in fields(ShapeQcPreset)}
    unknown = sorted(set(values) - expected)
    missing = sorted(expected - set(values))
    if unknown or missing:
        raise ValueError(f"{path}: preset {name!r}: unknown keys {unknown}, missing keys {missing}")
    values["coord_layers"] = tuple(int(v) for v in values["coord_layers"])
    return _validated(ShapeQcPreset(**values), f"{path}: preset {name!r}")


def _validated(preset: ShapeQcPreset, where: str) -> ShapeQcPreset:
    problems = []
    if preset.num_layers < 2:
        problems.append("num_layers must be at least 2")
    if 0 not in preset.coord_layers:
        problems.append("coord_layers must include layer 0 (the decoder sees the coordinates at its input)")
    if any(not 0 <= k < preset.num_layers for k in preset.coord_layers):
        problems.append(f"coord_layers must lie in 0..{preset.num_layers - 1}")
    for key in ("latent_dim", "hidden_width", "points_per_example", "batch_size", "epochs", "recon_points",
                "decode_stride", "decode_chunk", "min_structure_voxels", "threads"):
        if getattr(preset, key) < 1:
            problems.append(f"{key} must be >= 1")
    if not 0.0 <= preset.boundary_fraction <= 1.0:
        problems.append("boundary_fraction must lie in [0, 1]")
    if not 0.0 < preset.hd_percentile <= 100.0:
        problems.append("hd_percentile must lie in (0, 100]")
    if not 0.0 <= preset.exclude_fraction <= 1.0:
        problems.append("exclude_fraction must lie in [0, 1]")
    if preset.coord_scale_mm <= 0 or preset.robust_z_floor_mm <= 0:
        problems.append("coord_scale_mm and robust_z_floor_mm must be positive")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    return preset
