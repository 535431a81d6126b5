"""nnU-Net's environment and folder names, built from config paths.

nnU-Net reads its folders from environment variables. They are built here as an explicit dict; only a job's own
entry (`python -m cadsflow.specialists`, one process per job) applies it to its process, so every rule sees exactly
the folders its config names and no library function changes os.environ.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import types
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


def find_trainer_class(name: str, ext_trainer: str | None = None) -> type:
    """The nnU-Net trainer class `name`: from the folders of `ext_trainer` (default: this process's nnUNet_extTrainer)
    when one of their modules defines it, else nnU-Net's own search (recursive_find_trainer_class_by_name).

    nnU-Net's search imports every trainer module of its own package before it looks at nnUNet_extTrainer (among them
    the Primus trainers, which import timm): measured 2.4-4 s of each demo training job. The project's trainers
    (nnUNetTrainerCads*) are not in nnU-Net's package, so both searches return the same class; a module is picked by
    its text (`class <name>(`) and imported with its folder on sys.path, as nnU-Net imports it.
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    folders = (os.environ.get("nnUNet_extTrainer", "") if ext_trainer is None else ext_trainer).split(os.pathsep)
    definition = re.compile(rf"^class {re.escape(name)}\(", re.MULTILINE)
    for folder in filter(None, (f.strip() for f in folders)):
        for source in sorted(Path(folder).glob("*.py")):
            if definition.search(source.read_text()):
                found = getattr(_import_from(source), name, None)
                if not (isinstance(found, type) and issubclass(found, nnUNetTrainer)):
                    raise TypeError(f"{source}: {name} is not an nnUNetTrainer subclass")
                return found
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    return recursive_find_trainer_class_by_name(name)


def _import_from(source: Path) -> types.ModuleType:
    """Import the module file `source` by its name, with its folder first on sys.path (sibling imports resolve)."""
    folder = str(source.parent)
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(source.stem)
    finally:
        sys.path.remove(folder)


# -- how a trained model's network is built --------------------------------------------------------------------
# Written beside each checkpoint by training (cadsflow.specialists.train): whether the trainer builds its network
# from the plans alone (nnU-Net's own build_network_architecture, which every Cads trainer inherits). Inference can
# then build the network without importing the trainer (cadsflow.pseudolabel.cpu_predictor).
NETWORK_RECORD = "cads_network.json"
NETWORK_FROM_PLANS = "plans"  # nnUNetTrainer.build_network_architecture: get_network_from_plans
NETWORK_FROM_TRAINER = "trainer"  # the trainer overrides it: only the trainer class can build the network


NNUNET_TRAINER = ("nnunetv2.training.nnUNetTrainer.nnUNetTrainer", "nnUNetTrainer")  # module, class


def network_source(trainer_class: type) -> str:
    """NETWORK_FROM_PLANS when the class of `trainer_class`'s MRO that defines build_network_architecture is nnU-Net's
    nnUNetTrainer itself, else NETWORK_FROM_TRAINER (also for a class that defines none: nothing is assumed)."""
    for klass in trainer_class.__mro__:
        if "build_network_architecture" in vars(klass):
            own = (klass.__module__, klass.__qualname__) == NNUNET_TRAINER
            return NETWORK_FROM_PLANS if own else NETWORK_FROM_TRAINER
    return NETWORK_FROM_TRAINER


def write_network_record(fold_dir: str | Path, trainer_class: type) -> Path:
    """Record, beside the fold's checkpoints, which trainer trained them and where its network comes from."""
    import json

    from cadsflow.atomic import write_text

    path = Path(fold_dir) / NETWORK_RECORD
    write_text(path, json.dumps({"trainer": trainer_class.__name__, "network": network_source(trainer_class)}) + "\n")
    return path


def read_network_record(fold_dir: str | Path) -> dict | None:
    """The fold's network record, or None when there is none or it is not one (a model trained elsewhere)."""
    import json

    try:
        record = json.loads((Path(fold_dir) / NETWORK_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not {"trainer", "network"} <= set(record):
        return None
    return record
