"""Train one group's specialist (Online Methods 2.1, 6.1): nnU-Net plan + preprocess, then 3d_fullres training.

Both steps run as nnU-Net's own command-line programs in child processes with an explicit environment, so the
model is exactly what `nnUNetv2_plan_and_preprocess` and `nnUNetv2_train` would make by hand. The rule's output
is a small JSON marker that names the model folder; pseudo-labeling reads the model from there.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from pathlib import Path
from typing import IO

from cadsflow.atomic import write_text
from cadsflow.labels import GROUP_IDS
from cadsflow.specialists.nnunet import NnunetDirs, nnunet_env, plan_command, train_command, training_env
from cadsflow.specialists.presets import Preset

CHECKPOINT_NAME = "checkpoint_final.pth"
log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """An nnU-Net step failed or left no model; the message names the group, the step and where to look."""


def train_specialist(group: int, raw_dataset: str | Path, preset: Preset, dirs: NnunetDirs,
                     marker: str | Path, log_path: str | Path) -> dict:
    """Plan, preprocess and train group `group`'s dataset; write `marker` (JSON naming the model) and return it.

    `raw_dataset` is the group's nnU-Net raw dataset folder (DatasetGGG_Name) inside `dirs.raw`; nnU-Net's own
    output goes to `log_path`.
    """
    dataset_name = _check_dataset(group, Path(raw_dataset), dirs)
    started = time.monotonic()
    with open(log_path, "a") as log_handle:
        _run("plan and preprocess", group, plan_command(group, preset), nnunet_env(dirs), log_handle, log_path)
        planned = time.monotonic()
        _run("train", group, train_command(group, preset), training_env(dirs, preset), log_handle, log_path)
    model_dir = dirs.model_dir(dataset_name, preset)
    checkpoint = model_dir / f"fold_{preset.fold}" / CHECKPOINT_NAME
    if not checkpoint.is_file():
        raise TrainingError(f"group {group}: nnU-Net training finished but left no {checkpoint}; see {log_path}")
    record = {
        "group": group,
        "dataset": dataset_name,
        "preset": preset.name,
        "trainer": preset.trainer,
        "plans": preset.plans,
        "configuration": preset.configuration,
        "fold": preset.fold,
        "model_dir": str(model_dir.resolve()),
        "checkpoint": str(checkpoint.resolve()),
        "plan_seconds": round(planned - started, 1),
        "train_seconds": round(time.monotonic() - planned, 1),
    }
    write_text(marker, json.dumps(record, indent=2) + "\n")
    log.info("group %s: specialist %s trained in %.0f s", group, model_dir, time.monotonic() - started)
    return record


def read_marker(marker: str | Path) -> dict:
    """The record a finished training wrote; raise naming the file when it is not one."""
    marker = Path(marker)
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{marker}: cannot read the specialist marker ({exc})") from None
    missing = [k for k in ("model_dir", "fold") if not isinstance(record, dict) or k not in record]
    if missing:
        raise TrainingError(f"{marker}: not a marker written by train_specialist (missing {missing})")
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


def _run(step: str, group: int, cmd: list[str], env: dict[str, str], log_handle: IO, log_path) -> None:
    log.info("group %s: %s: %s", group, step, " ".join(cmd))
    log_handle.write(f"\n### group {group}: {step}: {' '.join(cmd)}\n")
    log_handle.flush()
    result = subprocess.run(cmd, env=env, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise TrainingError(f"group {group}: nnU-Net {step} exited with status {result.returncode}; see {log_path}")
