"""Train one group's specialist (Online Methods 2.1, 6.1) in two jobs: plan + preprocess (CPU), then train.

Both steps run nnU-Net's own code (its fingerprint extractor, experiment planner, preprocessor and trainer classes)
in the job's own process: one Python process per job, no second interpreter that imports torch again
(cadsflow.specialists.planning says why that matters for small datasets). nnU-Net reads its folders from the
environment; the job's entry (`python -m cadsflow.specialists`) sets them for its process, and these functions
refuse to run against other folders. Preprocessing is a job of its own so that a GPU job never spends hours
resampling (Online Methods 6.1: ~9 h of preprocessing for 22,000 images). Each step leaves a small JSON marker;
pseudo-labeling reads the model folder from the training marker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cadsflow.atomic import write_text
from cadsflow.labels import GROUP_IDS
from cadsflow.specialists.nnunet import NnunetDirs, find_trainer_class, nnunet_env, write_network_record
from cadsflow.specialists.planning import PlanningError, check_nnunet_folders, plan_and_preprocess
from cadsflow.specialists.presets import Preset

CHECKPOINT_NAME = "checkpoint_final.pth"
log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """An nnU-Net step failed or left no result; the message names the group, the step and where to look."""


# paths a marker stores relative to its own folder (_relative_to_marker); read_marker returns them resolved
MARKER_PATH_KEYS = frozenset({"model_dir", "checkpoint", "plans_file"})


def plan_specialist(group: int, raw_dataset: str | Path, preset: Preset, dirs: NnunetDirs,
                    marker: str | Path, log_path: str | Path,
                    steps: Callable[[int, str], Path] | None = None) -> dict:
    """Fingerprint, plan and preprocess group `group`'s raw dataset with the preset's plans; write `marker`.

    `raw_dataset` is the group's nnU-Net raw dataset folder (Dataset<G>_<Name>) directly inside `dirs.raw`.
    `steps(group, dataset_name)`, when given, runs instead of plan_and_preprocess and returns the plans file it
    left: the model flavors plan with the specialists' planner, derive their own configuration and preprocess only
    that (cadsflow.flavors.training); `preset` is then the preset train_specialist will train with.
    """
    dataset_name = _check_dataset(group, Path(raw_dataset), dirs)
    _check_folders(dirs)
    with _step("plan and preprocess", group, log_path) as timer:
        if steps is None:
            plans_file = plan_and_preprocess(group, dataset_name, preset)
        else:
            plans_file = steps(group, dataset_name)
    record = {"group": group, "dataset": dataset_name, "preset": preset.name, "plans": preset.plans,
              "plans_file": str(plans_file.resolve()), "seconds": round(timer.seconds, 1)}
    _write_marker(marker, record)
    return record


def train_specialist(group: int, planned: str | Path, preset: Preset, dirs: NnunetDirs,
                     marker: str | Path, log_path: str | Path) -> dict:
    """Train the preset's trainer on the preprocessed dataset that `planned` (plan_specialist's marker) names.

    Writes `marker`: JSON with the model folder, fold and checkpoint that pseudo-labeling loads.
    """
    plan = read_marker(planned, ("dataset", "plans"))
    if plan["plans"] != preset.plans:
        raise TrainingError(f"{planned}: planned with {plan['plans']}, but preset {preset.name} trains on "
                            f"{preset.plans}; rerun the planning")
    _check_folders(dirs)
    model_dir = dirs.model_dir(plan["dataset"], preset)
    _remove_stale_checkpoints(model_dir / f"fold_{preset.fold}", Path(planned))
    with _step("train", group, log_path) as timer:
        trainer_class = run_nnunet_training(group, preset)
    checkpoint = model_dir / f"fold_{preset.fold}" / CHECKPOINT_NAME
    if not checkpoint.is_file():
        raise TrainingError(f"group {group}: nnU-Net training finished but left no {checkpoint}; see {log_path}")
    write_network_record(checkpoint.parent, trainer_class)
    record = {
        "group": group,
        "dataset": plan["dataset"],
        "preset": preset.name,
        "trainer": preset.trainer,
        "plans": preset.plans,
        "configuration": preset.configuration,
        "fold": preset.fold,
        "model_dir": str(model_dir.resolve()),
        "checkpoint": str(checkpoint.resolve()),
        "seconds": round(timer.seconds, 1),
    }
    _write_marker(marker, record)
    log.info("group %s: specialist %s trained in %.0f s", group, model_dir, timer.seconds)
    return record


def run_nnunet_training(dataset_id: int, preset: Preset) -> type:
    """nnUNetv2_train's single-device path in this process: find the trainer, continue from the fold's latest
    checkpoint when there is one (a retried or requeued GPU job resumes a training that outlasts the scheduler's
    time limit), train, then run the trainer's final validation (which the Cads smoke trainers skip). Returns the
    trainer class.

    The trainer class comes from nnUNet_extTrainer directly (find_trainer_class), not after importing nnU-Net's
    whole trainer package (timm included): seconds of every demo training job.
    """
    import torch
    from nnunetv2.run.run_training import maybe_load_checkpoint

    if preset.seed is not None:
        seed_generators(preset.seed)
    trainer = build_trainer(dataset_id, preset, continue_training=True, device=torch.device(preset.device))
    maybe_load_checkpoint(trainer, continue_training=True, validation_only=False)
    trainer.run_training()
    trainer.perform_actual_validation(False)
    return type(trainer)


def seed_generators(seed: int) -> None:
    """Seed this job's Python, NumPy and torch generators (the preset's `seed`): nnU-Net draws its weights from torch
    and its patches and augmentations from NumPy and Python's random, in this process when augmentation runs in
    it (a CPU job: nnUNet_n_proc_DA 0), so a CPU training of the same data gives the same weights."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_trainer(dataset_id: int, preset: Preset, continue_training: bool, device):
    """nnU-Net's get_trainer_from_args (nnunetv2 2.8.1, nnunetv2/run/run_training.py) with find_trainer_class:
    the preset's trainer on the dataset's preprocessed plans and dataset.json."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    trainer_class = find_trainer_class(preset.trainer)
    folder = Path(str(nnUNet_preprocessed)) / maybe_convert_to_dataset_name(dataset_id)
    plans = load_json(str(folder / f"{preset.plans}.json"))
    plans["continue_training"] = continue_training
    dataset_json = load_json(str(folder / "dataset.json"))
    return trainer_class(plans=plans, configuration=preset.configuration, fold=preset.fold,
                         dataset_json=dataset_json, device=device)


def read_marker(marker: str | Path, keys=("model_dir", "fold")) -> dict:
    """A marker this module wrote (by default a training marker); raise naming the file when it is not one."""
    marker = Path(marker)
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{marker}: cannot read the specialist marker ({exc})") from None
    missing = [k for k in keys if not isinstance(record, dict) or k not in record]
    if missing:
        raise TrainingError(f"{marker}: not a marker written by cadsflow.specialists.train (missing {missing})")
    folder = marker.resolve().parent
    for key in MARKER_PATH_KEYS.intersection(record):
        record[key] = os.path.normpath(folder / record[key])  # an absolute path (older markers) stays as it is
    return record


def _write_marker(marker: str | Path, record: dict) -> None:
    """The record as JSON, its paths relative to the marker's folder: a run's results/ copied or moved elsewhere
    (another scratch, an archive, a test's tmp folder) keeps finding its models and plans (read_marker resolves
    them back)."""
    folder = Path(marker).resolve().parent
    on_disk = {k: os.path.relpath(v, folder) if k in MARKER_PATH_KEYS else v for k, v in record.items()}
    write_text(marker, json.dumps(on_disk, indent=2) + "\n")


def _check_dataset(group: int, raw_dataset: Path, dirs: NnunetDirs) -> str:
    if group not in GROUP_IDS:
        raise TrainingError(f"group {group} is not one of {GROUP_IDS}")
    if not re.fullmatch(rf"Dataset{group}_\w+", raw_dataset.name):
        raise TrainingError(f"{raw_dataset}: expected an nnU-Net dataset folder named Dataset{group}_<Name>")
    if raw_dataset.resolve().parent != Path(dirs.raw).resolve():
        raise TrainingError(f"{raw_dataset}: must lie directly in nnUNet_raw={dirs.raw}")
    if not (raw_dataset / "dataset.json").is_file():
        raise TrainingError(f"{raw_dataset}: no dataset.json; its export step (the gt or flavors stage) writes it")
    return raw_dataset.name


def _remove_stale_checkpoints(fold_dir: Path, planned: Path) -> None:
    """Checkpoints older than the planning belong to an earlier dataset or plan: never continue from them."""
    planned_at = planned.stat().st_mtime
    for checkpoint in sorted(fold_dir.glob("checkpoint_*.pth")):
        if checkpoint.stat().st_mtime < planned_at:
            log.info("%s: older than %s, removed so that training starts afresh", checkpoint, planned)
            checkpoint.unlink()


def _check_folders(dirs: NnunetDirs) -> None:
    expected = nnunet_env(dirs, base={})
    try:
        check_nnunet_folders(expected)
    except PlanningError as exc:
        raise TrainingError(str(exc)) from None


class _Timer:
    seconds = 0.0


@contextlib.contextmanager
def _step(step: str, group: int, log_path):
    """Run one nnU-Net step with its printed output appended to the job's log; time it; name the step on failure."""
    log.info("group %s: %s", group, step)
    timer = _Timer()
    started = time.monotonic()
    with open(log_path, "a") as handle:
        handle.write(f"\n### group {group}: {step} (nnU-Net in this process)\n")
        handle.flush()
        try:
            with contextlib.redirect_stdout(handle):
                yield timer
        except TrainingError:
            raise
        except Exception as exc:
            raise TrainingError(f"group {group}: nnU-Net {step} failed: {type(exc).__name__}: {exc}; "
                                f"see {log_path}") from exc
        finally:
            timer.seconds = time.monotonic() - started
            sys.stdout.flush()
