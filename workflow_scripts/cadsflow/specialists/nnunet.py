"""nnU-Net's environment and folder names, built from config paths.

nnU-Net reads its folders from environment variables. They are built here as an explicit dict; only a job's own
entry (`python -m cadsflow.specialists`, one process per job) applies it to its process, so every rule sees exactly
the folders its config names and no library function changes os.environ.
"""

from __future__ import annotations

import os
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
