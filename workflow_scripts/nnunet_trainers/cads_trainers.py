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
    """A whole nnU-Net training in about a minute on a CPU: a handful of iterations, no final validation.

    Everything else (plans, network, loss, augmentation, checkpoints) is nnU-Net's own, so the smoke model goes
    through the same code paths as the paper model. The small patch comes from the plans: the smoke preset plans
    with a small GPU-memory target and a coarse target spacing.
    """

    SMOKE_EPOCHS = 2
    SMOKE_ITERATIONS_PER_EPOCH = 5
    SMOKE_VAL_ITERATIONS_PER_EPOCH = 2

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = _schedule_value(EPOCHS_ENV, self.SMOKE_EPOCHS)
        self.num_iterations_per_epoch = _schedule_value(ITERATIONS_ENV, self.SMOKE_ITERATIONS_PER_EPOCH)
        self.num_val_iterations_per_epoch = _schedule_value(VAL_ITERATIONS_ENV, self.SMOKE_VAL_ITERATIONS_PER_EPOCH)
        self.save_every = self.num_epochs + 1  # intermediate checkpoints cost more than a smoke run is worth

    def perform_actual_validation(self, save_probabilities: bool = False):
        # With fold "all" the validation cases are the training cases: a sliding-window pass over all of them would
        # cost more than the smoke training and prove nothing. The pseudo-labeling stage does the predicting.
        self.print_to_log_file("smoke trainer: final validation skipped")
