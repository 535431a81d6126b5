"""Flavor presets (config/flavors.yaml, section ``presets``): the flavor network and its training as data.

A preset names the trainer, the plans and configuration the flavor plans add, the network (features per stage,
residual units per stage, stride, kernel), the patch, the batch, the schedule and the intensity percentiles.
``paper`` is Online Methods 6.1; ``smoke`` is the same topology scaled down for the CPU demo. Preset names match
config/presets.yaml, so one ``preset`` config key selects the specialists' and the flavors' settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from cadsflow.paths import CONFIG_DIR
from cadsflow.specialists.presets import SCHEDULE_KEYS
from cadsflow.textio import read_yaml_mapping

FLAVORS_YAML = CONFIG_DIR / "flavors.yaml"
_PRESET_KEYS = ("trainer", "plans", "configuration", "base_configuration", "network", "patch_size", "batch_size",
                "schedule", "intensity_percentiles", "dataset_runtime_min", "train_runtime_min")
_NETWORK_KEYS = ("features_per_stage", "blocks_per_stage", "decoder_blocks_per_stage", "stride", "kernel_size")


class FlavorSettingsError(ValueError):
    """A flavor preset is missing or malformed; the message names the file, the preset and the key."""


@dataclass(frozen=True)
class NetworkSpec:
    """The flavor network: a residual U-Net, one entry of features_per_stage per resolution stage."""

    features_per_stage: tuple[int, ...]
    blocks_per_stage: int  # residual units per encoder stage
    decoder_blocks_per_stage: int  # residual units per decoder stage
    stride: int  # downsampling between consecutive stages (the first stage keeps the input resolution)
    kernel_size: int

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    @property
    def total_downsampling(self) -> int:
        return self.stride ** (self.n_stages - 1)


@dataclass(frozen=True)
class FlavorPreset:
    name: str
    trainer: str
    plans: str
    configuration: str
    base_configuration: str
    network: NetworkSpec
    patch_size: tuple[int, int, int]
    batch_size: int
    schedule: dict[str, int]
    intensity_percentiles: tuple[float, float]
    dataset_runtime_min: int  # scheduler estimate of a flavor_dataset job (export, plan, preprocess)
    train_runtime_min: int  # scheduler estimate of a flavor_train job

    @property
    def model_settings(self) -> str:
        """The fields that shape a trained flavor model (a change replans and retrains; runtimes do not)."""
        fields = ("trainer", "plans", "configuration", "base_configuration", "network", "patch_size", "batch_size",
                  "schedule", "intensity_percentiles")
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in fields)


def load_flavor_preset(name: str, path: str | Path = FLAVORS_YAML) -> FlavorPreset:
    """The named preset, validated; errors name the file, the preset and the key."""
    presets = _read(path).get("presets")
    if not isinstance(presets, dict):
        raise FlavorSettingsError(f"{path}: expected a mapping 'presets'")
    if name not in presets:
        raise FlavorSettingsError(f"{path}: no flavor preset {name!r} (have: {', '.join(sorted(presets))})")
    return _parse_preset(path, name, presets[name])


def load_flavor_names(path: str | Path = FLAVORS_YAML) -> tuple[str, ...]:
    """The flavors, in their configured order (GT, Pseudo, Shape)."""
    names = _read(path).get("flavors")
    if not isinstance(names, list) or len(names) < 2 or len(set(names)) != len(names):
        raise FlavorSettingsError(f"{path}: 'flavors' must list at least two distinct names, got {names!r}")
    return tuple(str(n) for n in names)


# -- helpers ---------------------------------------------------------------------------------------------------


def _read(path: str | Path) -> dict:
    return read_yaml_mapping(path, "the flavor settings", FlavorSettingsError)


def _parse_preset(path, name: str, raw) -> FlavorPreset:
    where = f"{path}: flavor preset {name!r}"
    _exact_keys(where, raw, _PRESET_KEYS)
    _exact_keys(f"{where}, network", raw["network"], _NETWORK_KEYS)
    _exact_keys(f"{where}, schedule", raw["schedule"], SCHEDULE_KEYS)
    net = raw["network"]
    features = net["features_per_stage"]
    if not isinstance(features, list) or len(features) < 2 or not all(_positive_int(f) for f in features):
        raise FlavorSettingsError(f"{where}: network.features_per_stage must list at least two positive integers")
    for key in ("blocks_per_stage", "decoder_blocks_per_stage", "stride", "kernel_size"):
        if not _positive_int(net[key]):
            raise FlavorSettingsError(f"{where}: network.{key} must be a positive integer, got {net[key]!r}")
    spec = NetworkSpec(tuple(features), net["blocks_per_stage"], net["decoder_blocks_per_stage"], net["stride"],
                       net["kernel_size"])
    patch = raw["patch_size"]
    if not isinstance(patch, list) or len(patch) != 3 or not all(_positive_int(p) for p in patch):
        raise FlavorSettingsError(f"{where}: patch_size must list three positive integers, got {patch!r}")
    if any(p % spec.total_downsampling for p in patch):
        raise FlavorSettingsError(f"{where}: patch_size {patch} is not divisible by the network's total "
                                  f"downsampling {spec.total_downsampling} (stride {spec.stride}, {spec.n_stages} "
                                  f"stages)")
    for key in ("batch_size", "dataset_runtime_min", "train_runtime_min"):
        if not _positive_int(raw[key]):
            raise FlavorSettingsError(f"{where}: {key} must be a positive integer, got {raw[key]!r}")
    if not all(_positive_int(v) for v in raw["schedule"].values()):
        raise FlavorSettingsError(f"{where}: schedule values must be positive integers, got {raw['schedule']!r}")
    low_high = raw["intensity_percentiles"]
    if (not isinstance(low_high, list) or len(low_high) != 2
            or not all(isinstance(v, (int, float)) for v in low_high) or not 0 <= low_high[0] < low_high[1] <= 100):
        raise FlavorSettingsError(f"{where}: intensity_percentiles must be [low, high] with 0 <= low < high <= 100, "
                                  f"got {low_high!r}")
    for key in ("trainer", "plans", "configuration", "base_configuration"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise FlavorSettingsError(f"{where}: {key} must be a non-empty name, got {raw[key]!r}")
    if raw["configuration"] == raw["base_configuration"]:
        raise FlavorSettingsError(f"{where}: configuration must differ from base_configuration "
                                  f"({raw['configuration']!r})")
    return FlavorPreset(name, raw["trainer"], raw["plans"], raw["configuration"], raw["base_configuration"], spec,
                        tuple(patch), raw["batch_size"], dict(raw["schedule"]),
                        (float(low_high[0]), float(low_high[1])), raw["dataset_runtime_min"], raw["train_runtime_min"])


def _exact_keys(where: str, raw, keys) -> None:
    if not isinstance(raw, dict):
        raise FlavorSettingsError(f"{where}: expected a mapping")
    missing = [k for k in keys if k not in raw]
    unknown = [k for k in raw if k not in keys]
    if missing or unknown:
        parts = [f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(unknown)}" if unknown else ""]
        raise FlavorSettingsError(f"{where}: " + "; ".join(p for p in parts if p))


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0
