"""nnU-Net plans -> flavor plans: a new configuration whose network is the paper's flavor network (Online Methods 6.1).

The paper's flavor network: "a 5-layer 3D U-Net with channel numbers [32, 64, 128, 256, 512] and stride-2
sampling ... instance normalization ... PReLU ... Each layer includes two convolutional residual units", trained on
128^3 patches in batches of 2, on images scaled from their 5th to 95th percentile to [0, 1] with clipping.

It reaches nnU-Net through nnU-Net's own extension point, the configuration's ``architecture`` entry
(``network_class_name``, ``arch_kwargs``, ``_kw_requires_import``), which nnU-Net's trainer hands to
``get_network_from_plans``. The class is dynamic_network_architectures' ``ResidualUNet``: a residual encoder
(``n_blocks_per_stage`` BasicBlockD residual units per stage, each two 3x3x3 conv-norm-nonlin layers around an
identity or 1x1x1-projected skip) and a residual decoder (``n_conv_per_stage_decoder`` residual units per stage after
each transposed convolution). Both take the same norm and nonlinearity: InstanceNorm3d (affine, eps 1e-5, nnU-Net's
defaults) and PReLU (torch defaults: one slope, 0.25, as MONAI's PReLU). Stage 0 keeps the input resolution (stride
1, after dynamic_network_architectures' single-conv stem), each further stage halves it, so five stages downsample
four times. ``ResidualEncoderUNet`` would have a plain-conv decoder, which is not "each layer residual".

The flavor plans are the planner's plans plus one configuration that ``inherits_from`` the base configuration
(3d_fullres: spacing, resampling, batch_dice) and overrides data_identifier (own preprocessed data: the
normalisation differs), patch_size, batch_size, normalization_schemes and architecture. Intensities: the paper's
percentile scaling is done at dataset export (cadsflow.flavors.intensity.scale_percentiles), and the plans name
nnU-Net's own ``NoNormalization``, so nnU-Net leaves the scaled values as they are (a normalisation class nnU-Net
can find without patching; nnU-Net looks normalisation classes up only inside its own package).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from cadsflow.atomic import atomic_path
from cadsflow.flavors.settings import FlavorPreset, NetworkSpec

RESIDUAL_UNET = "dynamic_network_architectures.architectures.unet.ResidualUNet"
CONV_3D = "torch.nn.modules.conv.Conv3d"
INSTANCE_NORM_3D = "torch.nn.modules.instancenorm.InstanceNorm3d"  # Online Methods 6.1: instance normalization
PRELU = "torch.nn.modules.activation.PReLU"  # Online Methods 6.1: Parametric Rectified Linear Units
INSTANCE_NORM_KWARGS = {"eps": 1e-05, "affine": True}  # nnU-Net's planners' defaults
NO_NORMALIZATION = "NoNormalization"  # nnunetv2.preprocessing.normalization.default_normalization_schemes
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]  # nnU-Net's own list for these kwargs


class FlavorPlansError(ValueError):
    """The planner's plans cannot carry the flavor configuration; the message names the plans and the problem."""


def flavor_plans(plans: dict, preset: FlavorPreset) -> dict:
    """nnU-Net `plans` (as nnU-Net writes them) copied, renamed to the preset's plans, plus the flavor configuration."""
    where = f"plans {plans.get('plans_name', '?')} of {plans.get('dataset_name', '?')}"
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or preset.base_configuration not in configurations:
        have = ", ".join(configurations) if isinstance(configurations, dict) else "none"
        raise FlavorPlansError(f"{where}: no configuration {preset.base_configuration!r} to inherit from "
                               f"(have: {have})")
    base = _resolved(configurations, preset.base_configuration)
    if len(base.get("patch_size", ())) != len(preset.patch_size):
        raise FlavorPlansError(f"{where}: {preset.base_configuration} is {len(base.get('patch_size', ()))}-D; the "
                               f"flavor network is 3-D")
    channels = len(base["normalization_schemes"])
    out = copy.deepcopy(plans)
    out["plans_name"] = preset.plans
    out["configurations"][preset.configuration] = {
        "inherits_from": preset.base_configuration,
        "data_identifier": f"{preset.plans}_{preset.configuration}",
        "patch_size": list(preset.patch_size),
        "batch_size": preset.batch_size,
        "normalization_schemes": [NO_NORMALIZATION] * channels,
        "use_mask_for_norm": [False] * channels,
        "architecture": flavor_architecture(preset.network),
    }
    return out


def flavor_architecture(spec: NetworkSpec) -> dict:
    """The configuration's ``architecture`` entry for the flavor network (JSON-ready, as nnU-Net stores it)."""
    n = spec.n_stages
    return {
        "network_class_name": RESIDUAL_UNET,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(spec.features_per_stage),
            "conv_op": CONV_3D,
            "kernel_sizes": [[spec.kernel_size] * 3 for _ in range(n)],
            "strides": [[1, 1, 1]] + [[spec.stride] * 3 for _ in range(n - 1)],
            "n_blocks_per_stage": [spec.blocks_per_stage] * n,
            "n_conv_per_stage_decoder": [spec.decoder_blocks_per_stage] * (n - 1),
            "conv_bias": True,
            "norm_op": INSTANCE_NORM_3D,
            "norm_op_kwargs": dict(INSTANCE_NORM_KWARGS),
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": PRELU,
            "nonlin_kwargs": {},
        },
        "_kw_requires_import": list(REQUIRES_IMPORT),
    }


def write_flavor_plans(source_plans: str | Path, preset: FlavorPreset) -> Path:
    """Read the planner's plans JSON, write the flavor plans beside it as <preset.plans>.json (atomically)."""
    source_plans = Path(source_plans)
    try:
        plans = json.loads(source_plans.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FlavorPlansError(f"{source_plans}: cannot read nnU-Net plans ({exc})") from None
    out = source_plans.with_name(f"{preset.plans}.json")
    if out == source_plans:
        raise FlavorPlansError(f"{source_plans}: the flavor plans would overwrite the planner's plans; give the "
                               f"flavor preset its own plans name")
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(flavor_plans(plans, preset), indent=4))
    return out


def _resolved(configurations: dict, name: str) -> dict:
    """A configuration with nnU-Net's ``inherits_from`` applied (parent first, child keys win)."""
    config = configurations[name]
    parent = config.get("inherits_from")
    return {**_resolved(configurations, parent), **config} if parent else dict(config)
