"""Train one group's specialist (Online Methods 2.1, 6.1) in two jobs: plan + preprocess (CPU), then train.

Both steps run nnU-Net's own command-line programs (`nnUNetv2_plan_and_preprocess`, `nnUNetv2_train`) in child
processes with an explicit environment, so the model is exactly what nnU-Net makes by hand. Preprocessing is a job
of its own so that a GPU job never spends hours resampling (Online Methods 6.1: ~9 h of preprocessing for 22,000
images). Each step leaves a small JSON marker; pseudo-labeling reads the model folder from the training marker.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from pathlib import Path

from cadsflow.atomic import write_text
from cadsflow.labels import GROUP_IDS
from cadsflow.specialists.nnunet import NnunetDirs, nnunet_env, plan_command, train_command, training_env
from cadsflow.specialists.presets import Preset

CHECKPOINT_NAME = "checkpoint_final.pth"
log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """An nnU-Net step failed or left no result; the message names the group, the step and where to look."""


def plan_specialist(group: int, raw_dataset: str | Path, preset: Preset, dirs: NnunetDirs,
                    marker: str | Path, log_path: str | Path) -> dict:
    """Fingerprint, plan and preprocess group `group`'s raw dataset with the preset's plans; write `marker`.

    `raw_dataset` is the group's nnU-Net raw dataset folder (Dataset<G>_<Name>) directly inside `dirs.raw`.
    """
    dataset_name = _check_dataset(group, Path(raw_dataset), dirs)
    seconds = _run("plan and preprocess", group, plan_command(group, preset), nnunet_env(dirs), log_path)
    plans_file = Path(dirs.preprocessed) / dataset_name / f"{preset.plans}.json"
    if not plans_file.is_file():
        raise TrainingError(f"group {group}: nnU-Net planning finished but left no {plans_file}; see {log_path}")
    record = {"group": group, "dataset": dataset_name, "preset": preset.name, "plans": preset.plans,
              "plans_file": str(plans_file.resolve()), "seconds": round(seconds, 1)}
    write_text(marker, json.dumps(record, indent=2) + "\n")
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
    model_dir = dirs.model_dir(plan["dataset"], preset)
    _remove_stale_checkpoints(model_dir / f"fold_{preset.fold}", Path(planned))
    seconds = _run("train", group, train_command(group, preset), training_env(dirs, preset), log_path)
    checkpoint = model_dir / f"fold_{preset.fold}" / CHECKPOINT_NAME
    if not checkpoint.is_file():
        raise TrainingError(f"group {group}: nnU-Net training finished but left no {checkpoint}; see {log_path}")
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
        "seconds": round(seconds, 1),
    }
    write_text(marker, json.dumps(record, indent=2) + "\n")
    log.info("group %s: specialist %s trained in %.0f s", group, model_dir, seconds)
    return record


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
    return record


def _check_dataset(group: int, raw_dataset: Path, dirs: NnunetDirs) -> str:
    if group not in GROUP_IDS:
        raise TrainingError(f"group {group} is not one of {GROUP_IDS}")
    if not re.fullmatch(rf"Dataset{group}_\w+", raw_dataset.name):
        raise TrainingError(f"{raw_dataset}: expected an nnU-Net dataset folder named Dataset{group}_<Name>")
    if raw_dataset.resolve().parent != Path(dirs.raw).resolve():
        raise TrainingError(f"{raw_dataset}: must lie directly in nnUNet_raw={dirs.raw}")
    if not (raw_dataset / "dataset.json").is_file():
        raise TrainingError(f"{raw_dataset}: no dataset.json; the gt stage exports it")
    return raw_dataset.name


def _remove_stale_checkpoints(fold_dir: Path, planned: Path) -> None:
    """Checkpoints older than the planning belong to an earlier dataset or plan: never continue from them."""
    planned_at = planned.stat().st_mtime
    for checkpoint in sorted(fold_dir.glob("checkpoint_*.pth")):
        if checkpoint.stat().st_mtime < planned_at:
            log.info("%s: older than %s, removed so that training starts afresh", checkpoint, planned)
            checkpoint.unlink()


def _run(step: str, group: int, cmd: list[str], env: dict[str, str], log_path) -> float:
    """Run one nnU-Net program with its output appended to the job's log; return its wall time in seconds."""
    log.info("group %s: %s: %s", group, step, " ".join(cmd))
    started = time.monotonic()
    with open(log_path, "a") as handle:
        handle.write(f"\n### group {group}: {step}: {' '.join(cmd)}\n")
        handle.flush()
        result = subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise TrainingError(f"group {group}: nnU-Net {step} exited with status {result.returncode}; see {log_path}")
    return time.monotonic() - started
