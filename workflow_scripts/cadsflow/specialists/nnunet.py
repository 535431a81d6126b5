"""nnU-Net's environment, command lines and folder names, built from config paths.

nnU-Net reads its folders from environment variables. They are built here as an explicit dict for each child
process (never by changing this process's os.environ), so every rule sees exactly the folders its config names.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cadsflow.paths import PROJECT_ROOT
from cadsflow.specialists.presets import Preset

TRAINERS_DIR = PROJECT_ROOT / "workflow_scripts" / "nnunet_trainers"  # handed to nnU-Net as nnUNet_extTrainer
SCHEDULE_ENV = {  # read by workflow_scripts/nnunet_trainers/cads_trainers.py
    "epochs": "CADS_NNUNET_EPOCHS",
    "iterations_per_epoch": "CADS_NNUNET_ITERATIONS_PER_EPOCH",
    "val_iterations_per_epoch": "CADS_NNUNET_VAL_ITERATIONS_PER_EPOCH",
}
PLAN_MODULE = "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints"  # nnUNetv2_plan_and_preprocess
TRAIN_MODULE = "nnunetv2.run.run_training"  # nnUNetv2_train


@dataclass(frozen=True)
class NnunetDirs:
    """nnU-Net's three folders plus the folder of the project's trainers."""

    raw: Path
    preprocessed: Path
    results: Path
    trainers: Path = TRAINERS_DIR

    def model_dir(self, dataset_name: str, preset: Preset) -> Path:
        return self.results / dataset_name / preset.model_folder_name


def nnunet_env(dirs: NnunetDirs, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an nnU-Net child process: `base` (default: this process's) plus nnU-Net's folders."""
    env = dict(os.environ if base is None else base)
    env.update(
        nnUNet_raw=str(Path(dirs.raw).resolve()),
        nnUNet_preprocessed=str(Path(dirs.preprocessed).resolve()),
        nnUNet_results=str(Path(dirs.results).resolve()),
        nnUNet_extTrainer=str(Path(dirs.trainers).resolve()),
    )
    return env


def training_env(dirs: NnunetDirs, preset: Preset, base: dict[str, str] | None = None) -> dict[str, str]:
    """nnunet_env plus the preset's schedule and data-augmentation workers (0: in-process, right for a CPU)."""
    env = nnunet_env(dirs, base)
    env.update({SCHEDULE_ENV[key]: str(value) for key, value in preset.schedule.items()})
    env["nnUNet_n_proc_DA"] = "0" if preset.device == "cpu" else str(preset.num_processes)
    return env


def plan_command(dataset_id: int, preset: Preset) -> list[str]:
    """nnUNetv2_plan_and_preprocess for one configuration; --clean redoes the fingerprint when the GT changed."""
    cmd = [
        sys.executable, "-m", PLAN_MODULE,
        "-d", str(dataset_id),
        "-c", preset.configuration,
        "-pl", preset.planner,
        "-overwrite_plans_name", preset.plans,
        "-np", str(preset.num_processes),
        "-npfp", str(preset.num_processes),
        "--verify_dataset_integrity",
        "--clean",
        "--no_pbar",
    ]
    if preset.gpu_memory_target_gb is not None:
        cmd += ["-gpu_memory_target", str(preset.gpu_memory_target_gb)]
    if preset.target_spacing_mm is not None:
        cmd += ["-overwrite_target_spacing", *(str(s) for s in preset.target_spacing_mm)]
    return cmd


def train_command(dataset_id: int, preset: Preset) -> list[str]:
    """nnUNetv2_train for the preset's trainer, plans, configuration, fold and device.

    `--c` continues from the fold's latest checkpoint when there is one (a retried or requeued GPU job resumes a
    training that outlasts the scheduler's time limit) and starts afresh otherwise.
    """
    return [
        sys.executable, "-m", TRAIN_MODULE,
        str(dataset_id), preset.configuration, preset.fold,
        "-tr", preset.trainer,
        "-p", preset.plans,
        "-device", preset.device,
        "--c",
    ]
