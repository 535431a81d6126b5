"""The final model's jobs around nnU-Net (Online Methods 4.1, 6.1): its folders, its environment, its training.

The final model is trained the way the specialists are (cadsflow.specialists.train: nnU-Net's own classes in the
job's process, a JSON marker naming the model folder and fold), with three differences, all data:
- its own nnU-Net folders (results/final/nnUNet_raw, nnUNet_preprocessed, models), so each group's dataset keeps
  its id and name beside the specialists';
- its presets (config/final.yaml: ResEnc L plans, the oversampling trainer, mirroring off) with per-group epochs;
- the oversampling table: the trainer (workflow_scripts/nnunet_trainers/cads_oversampling_trainers.py) reads its
  path from CADS_OVERSAMPLING_TABLE, which the job's entry sets for its own process, like the schedule variables.
"""

from __future__ import annotations

from pathlib import Path

from cadsflow.final.oversampling import OVERSAMPLING_TABLE_ENV, read_table
from cadsflow.specialists.nnunet import NnunetDirs, training_env
from cadsflow.specialists.presets import Preset
from cadsflow.specialists.train import train_specialist


def final_training_env(dirs: NnunetDirs, preset: Preset, table: str | Path,
                       base: dict[str, str] | None = None) -> dict[str, str]:
    """The training process's environment: nnU-Net's folders, the preset's schedule and the oversampling table."""
    env = training_env(dirs, preset, base)
    env[OVERSAMPLING_TABLE_ENV] = str(Path(table).resolve())
    return env


def train_final(group: int, planned: str | Path, table: str | Path, preset: Preset, dirs: NnunetDirs,
                marker: str | Path, log_path: str | Path) -> dict:
    """Train group `group`'s final model on its planned dataset; write `marker` (the specialists' marker format).

    The table is read first, so a malformed one fails the job in seconds instead of after nnU-Net's set-up.
    """
    read_table(table)
    return train_specialist(group, planned, preset, dirs, marker, log_path)
