"""The flavor models' nnU-Net trainers (Online Methods 6.1), found by nnU-Net through `nnUNet_extTrainer`.

"During training, we randomly crop four patches of size (128, 128, 128) per image with balanced
foreground-background sampling. We train all models for 200 epochs using a batch size of 2. The Adam optimizer
starts with a learning rate of 1e-4 and follows cosine annealing. We monitor performance using Dice Cross-entropy
loss and Dice metrics." The network, patch and batch come from the flavor plans (cadsflow.flavors.network); this
trainer sets the rest, as ordinary overrides of nnU-Net's trainer, nothing patched:

- mirroring off: derived from the specialists' nnUNetTrainerCadsNoMirroring (cads_trainers.py), which is nnU-Net's
  nnUNetTrainerNoMirroring with the preset's schedule from the CADS_NNUNET_* environment variables;
- epochs: the schedule's, else the paper's 200; iterations per epoch: the schedule's, else nnU-Net's 250 (the
  paper's epochs were passes over its data loader; nnU-Net counts iterations);
- Adam at 1e-4, no weight decay (the paper names none; torch's default), cosine annealing from 1e-4 to 0 over the
  epochs, stepped once per epoch by nnU-Net's loop with the epoch number;
- balanced sampling: oversample_foreground_percent 0.5, so with a batch of 2 nnU-Net draws one patch centred on
  foreground and one anywhere (nnU-Net draws one patch per batch element, not four per image);
- loss: nnU-Net's own Dice + cross-entropy on the full-resolution output; deep supervision off, because the paper's
  network has a single output.
"""

import math
import os

import torch
from torch.optim.lr_scheduler import LRScheduler

from cads_trainers import EPOCHS_ENV, nnUNetTrainerCadsNoMirroring, nnUNetTrainerCadsSmoke

FLAVOR_EPOCHS = 200  # Online Methods 6.1: "We train all models for 200 epochs"
FLAVOR_INITIAL_LR = 1e-4  # Online Methods 6.1: "The Adam optimizer starts with a learning rate of 1e-4"
FLAVOR_WEIGHT_DECAY = 0.0  # not in the paper; torch.optim.Adam's default
FLAVOR_OVERSAMPLE_FOREGROUND = 0.5  # Online Methods 6.1: "balanced foreground-background sampling"
FLAVOR_MIN_LR = 0.0  # cosine annealing to zero (torch CosineAnnealingLR's default eta_min)


class CosineAnnealingScheduler(LRScheduler):
    """lr(epoch) = min_lr + (initial_lr - min_lr) * (1 + cos(pi * epoch / max_steps)) / 2, in closed form.

    Called like nnU-Net's PolyLRScheduler: nnU-Net's loop calls step(current_epoch) at every epoch start, so the
    rate depends only on the epoch (a resumed training continues on the same curve). torch's CosineAnnealingLR
    would need the deprecated step(epoch) form for that.
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, min_lr: float = FLAVOR_MIN_LR,
                 current_step: int = None):
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.min_lr = min_lr
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        cosine = (1 + math.cos(math.pi * current_step / self.max_steps)) / 2
        new_lr = self.min_lr + (self.initial_lr - self.min_lr) * cosine
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = new_lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return self._last_lr


class nnUNetTrainerCadsFlavor(nnUNetTrainerCadsNoMirroring):
    """The paper's flavor trainer (module docstring); use it with the flavor plans' configuration."""

    DEFAULT_EPOCHS = FLAVOR_EPOCHS

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if EPOCHS_ENV not in os.environ:  # set: the parent has read the preset's schedule
            self.num_epochs = self.DEFAULT_EPOCHS
        self.initial_lr = FLAVOR_INITIAL_LR
        self.weight_decay = FLAVOR_WEIGHT_DECAY
        self.oversample_foreground_percent = FLAVOR_OVERSAMPLE_FOREGROUND
        self.enable_deep_supervision = False

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, CosineAnnealingScheduler(optimizer, self.initial_lr, self.num_epochs)


class nnUNetTrainerCadsFlavorSmoke(nnUNetTrainerCadsFlavor, nnUNetTrainerCadsSmoke):
    """The flavor trainer with the smoke trainer's short schedule and skipped final validation (the CPU demo)."""

    DEFAULT_EPOCHS = nnUNetTrainerCadsSmoke.SMOKE_EPOCHS
