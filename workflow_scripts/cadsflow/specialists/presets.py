"""Training presets (config/presets.yaml): a preset is data the rules read, never a code branch.

`smoke` trains a tiny specialist on a CPU in about a minute (the demo and the tests); `paper` is the stock
nnU-Net schedule on a GPU. The DAG is the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from cadsflow.paths import CONFIG_DIR

PRESETS_YAML = CONFIG_DIR / "presets.yaml"
SCHEDULE_KEYS = ("epochs", "iterations_per_epoch", "val_iterations_per_epoch")
NETWORK_KEYS = ("base_features", "max_features")
RESAMPLING_KEYS = ("image", "labels")  # cadsflow.specialists.planning.set_resampling_orders
LABEL_RESAMPLING = ("probabilities", "nearest")  # cadsflow.pseudolabel.infer.predict_array
_FIELDS = (
    "trainer", "schedule", "plans", "planner", "gpu_memory_target_gb", "target_spacing_mm", "resampling_orders",
    "network",
    "configuration", "fold", "device", "threads", "num_processes", "verify_dataset_integrity", "fingerprint_samples", "shard_size",
    "tile_step_size", "label_resampling", "gpus", "gpu_model",
    "plan_runtime_min", "train_runtime_min", "infer_runtime_min_per_volume", "mem_mb", "seed",
)


class PresetError(ValueError):
    """A preset is missing or malformed; the message names the file, the preset and the key."""


@dataclass(frozen=True)
class Preset:
    name: str
    trainer: str
    schedule: dict[str, int]
    plans: str
    planner: str
    gpu_memory_target_gb: float | None
    target_spacing_mm: tuple[float, float, float] | None
    resampling_orders: dict[str, int | None]  # image / labels: spline orders written into the plans (None: nnU-Net's)
    network: dict[str, int | None]  # base_features / max_features of nnU-Net's planner; None keeps nnU-Net's
    configuration: str
    fold: str  # "all" or "0".."4", as nnU-Net names fold folders
    device: str
    threads: int
    num_processes: int
    verify_dataset_integrity: bool
    fingerprint_samples: int | None  # foreground intensities sampled for the CT normalisation; None: nnU-Net's 1e8
    shard_size: int
    tile_step_size: float  # nnU-Net sliding-window step, a fraction of the patch (0.5: half-overlapping tiles)
    label_resampling: str  # probabilities (nnU-Net's export) or nearest (argmax on the model grid, then labels)
    gpus: int
    gpu_model: str | None
    plan_runtime_min: int
    train_runtime_min: int
    infer_runtime_min_per_volume: float
    mem_mb: int
    seed: int | None = None  # Python's, NumPy's and torch's generators seeded before training; None: unseeded

    @property
    def model_settings(self) -> str:
        """The fields that shape a trained model; a change replans and retrains, inference-only fields do not."""
        fields = ("trainer", "schedule", "plans", "planner", "gpu_memory_target_gb", "target_spacing_mm",
                  "resampling_orders", "network", "fingerprint_samples", "configuration", "fold", "seed")
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in fields)

    @property
    def model_folder_name(self) -> str:
        """nnU-Net's name for a trained model folder inside the dataset's results folder."""
        return f"{self.trainer}__{self.plans}__{self.configuration}"


def load_preset(name: str, path: str | Path = PRESETS_YAML) -> Preset:
    """Read one preset; raise PresetError naming the file, the preset and what is wrong."""
    path = Path(path)
    try:
        table = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PresetError(f"{path}: cannot read presets ({exc})") from None
    if name not in table:
        raise PresetError(f"{path}: no preset {name!r}; presets are {sorted(table)}")
    entry = table[name]
    where = f"{path}: preset {name!r}"
    missing = [k for k in _FIELDS if k not in entry]
    unknown = sorted(set(entry) - set(_FIELDS))
    if missing or unknown:
        raise PresetError(f"{where}: missing keys {missing}, unknown keys {unknown}")
    return Preset(
        name=name,
        trainer=str(entry["trainer"]),
        schedule=_schedule(entry["schedule"], where),
        plans=str(entry["plans"]),
        planner=str(entry["planner"]),
        gpu_memory_target_gb=_optional_float(entry["gpu_memory_target_gb"], f"{where}: gpu_memory_target_gb"),
        target_spacing_mm=_spacing(entry["target_spacing_mm"], where),
        resampling_orders=_resampling_orders(entry["resampling_orders"], where),
        network=_network(entry["network"], where),
        configuration=str(entry["configuration"]),
        fold=_fold(entry["fold"], where),
        device=_device(entry["device"], where),
        threads=_positive_int(entry["threads"], f"{where}: threads"),
        num_processes=_positive_int(entry["num_processes"], f"{where}: num_processes"),
        verify_dataset_integrity=_bool(entry["verify_dataset_integrity"], f"{where}: verify_dataset_integrity"),
        fingerprint_samples=None if entry["fingerprint_samples"] is None
        else _positive_int(entry["fingerprint_samples"], f"{where}: fingerprint_samples"),
        shard_size=_positive_int(entry["shard_size"], f"{where}: shard_size"),
        tile_step_size=_tile_step(entry["tile_step_size"], where),
        label_resampling=_choice(entry["label_resampling"], LABEL_RESAMPLING, f"{where}: label_resampling"),
        gpus=_non_negative_int(entry["gpus"], f"{where}: gpus"),
        gpu_model=None if entry["gpu_model"] is None else str(entry["gpu_model"]),
        plan_runtime_min=_positive_int(entry["plan_runtime_min"], f"{where}: plan_runtime_min"),
        train_runtime_min=_positive_int(entry["train_runtime_min"], f"{where}: train_runtime_min"),
        infer_runtime_min_per_volume=float(entry["infer_runtime_min_per_volume"]),
        mem_mb=_positive_int(entry["mem_mb"], f"{where}: mem_mb"),
        seed=None if entry["seed"] is None else _non_negative_int(entry["seed"], f"{where}: seed"),
    )


def _schedule(value, where: str) -> dict[str, int]:
    if not isinstance(value, dict) or sorted(value) != sorted(SCHEDULE_KEYS):
        raise PresetError(f"{where}: schedule must have exactly the keys {list(SCHEDULE_KEYS)}, got {value!r}")
    return {k: _positive_int(value[k], f"{where}: schedule.{k}") for k in SCHEDULE_KEYS}


def _choice(value, allowed, where: str) -> str:
    if value not in allowed:
        raise PresetError(f"{where}: expected one of {list(allowed)}, got {value!r}")
    return value


def _network(value, where: str) -> dict[str, int | None]:
    if not isinstance(value, dict) or sorted(value) != sorted(NETWORK_KEYS):
        raise PresetError(f"{where}: network must have exactly the keys {list(NETWORK_KEYS)}, got {value!r}")
    return {k: None if value[k] is None else _positive_int(value[k], f"{where}: network.{k}") for k in NETWORK_KEYS}


def _bool(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise PresetError(f"{where}: expected true or false, got {value!r}")
    return value


def _spacing(value, where: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(v) and v > 0 for v in value):
        raise PresetError(f"{where}: target_spacing_mm must be null or three positive numbers (mm), got {value!r}")
    return tuple(float(v) for v in value)


def _resampling_orders(value, where: str) -> dict[str, int | None]:
    if not isinstance(value, dict) or sorted(value) != sorted(RESAMPLING_KEYS):
        raise PresetError(f"{where}: resampling_orders must have exactly the keys {list(RESAMPLING_KEYS)}, "
                          f"got {value!r}")
    for key, order in value.items():
        if order is not None and (not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= 5):
            raise PresetError(f"{where}: resampling_orders.{key} must be null (nnU-Net's own) or a spline order "
                              f"0-5, got {order!r}")
    return {k: value[k] for k in RESAMPLING_KEYS}


def _tile_step(value, where: str) -> float:
    if not _is_number(value) or not 0 < value <= 1:
        raise PresetError(f"{where}: tile_step_size must be a number in (0, 1] (fraction of the patch), got {value!r}")
    return float(value)


def _fold(value, where: str) -> str:
    fold = str(value)
    if fold != "all" and not (fold.isdigit() and int(fold) < 5):
        raise PresetError(f"{where}: fold must be 'all' or 0-4, got {value!r}")
    return fold


def _device(value, where: str) -> str:
    device = str(value)
    if device not in ("cpu", "cuda", "mps"):
        raise PresetError(f"{where}: device must be cpu, cuda or mps, got {value!r}")
    return device


def _optional_float(value, where: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or value <= 0:
        raise PresetError(f"{where}: expected null or a positive number, got {value!r}")
    return float(value)


def _positive_int(value, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PresetError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _non_negative_int(value, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PresetError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
