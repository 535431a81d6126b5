"""The project's nnU-Net trainers, found by nnU-Net through the `nnUNet_extTrainer` environment variable.

nnU-Net looks a trainer up by class name, first in its own package, then in the folders that `nnUNet_extTrainer`
lists (nnunetv2.utilities.find_objects). Training and inference processes both need that variable, because a
checkpoint names its trainer class. Nothing here edits or patches nnU-Net; these are ordinary subclasses.

Mirroring is off throughout (Online Methods 6.1: "We disable mirroring throughout development to prevent
confusion from anatomical symmetries"): both trainers derive from nnU-Net's own nnUNetTrainerNoMirroring, which
turns mirroring off in augmentation and sets `inference_allowed_mirroring_axes = None` for the predictor.

The schedule comes from the preset (config/presets.yaml) through three environment variables that
cadsflow.specialists.train sets for the training process only; unset, a trainer keeps its own default.
"""

import os
from os.path import join
from time import time

import numpy as np
import torch

from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)

EPOCHS_ENV = "CADS_NNUNET_EPOCHS"
ITERATIONS_ENV = "CADS_NNUNET_ITERATIONS_PER_EPOCH"
VAL_ITERATIONS_ENV = "CADS_NNUNET_VAL_ITERATIONS_PER_EPOCH"


def _schedule_value(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"environment variable {name}={value!r}: expected a positive integer")
    return int(value)


class nnUNetTrainerCadsNoMirroring(nnUNetTrainerNoMirroring):
    """The paper's specialist trainer: nnU-Net's stock trainer without mirroring, schedule from the preset."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = _schedule_value(EPOCHS_ENV, self.num_epochs)
        self.num_iterations_per_epoch = _schedule_value(ITERATIONS_ENV, self.num_iterations_per_epoch)
        self.num_val_iterations_per_epoch = _schedule_value(VAL_ITERATIONS_ENV, self.num_val_iterations_per_epoch)


class nnUNetTrainerCadsSmoke(nnUNetTrainerCadsNoMirroring):
    """A whole nnU-Net training in seconds on a CPU: one epoch of a handful of iterations, no final validation,
    no per-epoch progress plot or best-EMA checkpoint.

    Everything else (plans, network, loss, augmentation, the final checkpoint) is nnU-Net's own, so the smoke model
    goes through the same code paths as the paper model. The small network and a patch covering a whole demo
    phantom come from the plans (the smoke preset's network and target spacing).
    """

    SMOKE_EPOCHS = 1
    SMOKE_ITERATIONS_PER_EPOCH = 10
    SMOKE_VAL_ITERATIONS_PER_EPOCH = 1

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = _schedule_value(EPOCHS_ENV, self.SMOKE_EPOCHS)
        self.num_iterations_per_epoch = _schedule_value(ITERATIONS_ENV, self.SMOKE_ITERATIONS_PER_EPOCH)
        self.num_val_iterations_per_epoch = _schedule_value(VAL_ITERATIONS_ENV, self.SMOKE_VAL_ITERATIONS_PER_EPOCH)
        self.save_every = self.num_epochs + 1  # intermediate checkpoints cost more than a smoke run is worth

    def on_epoch_end(self):
        # nnU-Net's on_epoch_end also writes checkpoint_best.pth whenever the EMA pseudo Dice improves and redraws
        # progress.png (matplotlib) every epoch: seconds per epoch that a smoke run never reads. The periodic
        # checkpoint (save_every) and the final checkpoint (on_train_end) stay nnU-Net's.
        self.logger.log("epoch_end_timestamps", time(), self.current_epoch)
        self.print_to_log_file("train_loss", np.round(self.logger.get_value("train_losses", step=-1), decimals=4))
        if (self.current_epoch + 1) % self.save_every == 0 and self.current_epoch != self.num_epochs - 1:
            self.save_checkpoint(join(self.output_folder, "checkpoint_latest.pth"))
        self.current_epoch += 1

    def perform_actual_validation(self, save_probabilities: bool = False):
        # With fold "all" the validation cases are the training cases: a sliding-window pass over all of them would
        # cost more than the smoke training and prove nothing. The pseudo-labeling stage does the predicting.
        self.print_to_log_file("smoke trainer: final validation skipped")
