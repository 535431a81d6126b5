"""The flavor trainers as nnU-Net finds and initialises them: Adam 1e-4, cosine annealing, no mirroring, balanced
foreground sampling, Dice + CE on one output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cadsflow.flavors.network import write_flavor_plans
from cadsflow.flavors.settings import load_flavor_preset
from cadsflow.specialists.nnunet import SCHEDULE_ENV, TRAINERS_DIR
from test_flavors_network import planner_plans

DATASET = "Dataset990_FlavorTiny"
LABELS = {"background": 0, "liver": 1, "spleen": 2}
FLAVOR_LR = 1e-4  # Online Methods 6.1


def cosine(epoch: int, epochs: int, initial: float = FLAVOR_LR) -> float:
    return initial * (1 + math.cos(math.pi * epoch / epochs)) / 2


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    """nnU-Net's own get_trainer_from_args on a tiny preprocessed dataset with the smoke flavor plans."""
    preset = load_flavor_preset("smoke")
    pre = tmp_path / "nnUNet_preprocessed" / DATASET
    pre.mkdir(parents=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps(planner_plans()))
    write_flavor_plans(pre / "nnUNetPlans.json", preset)
    (pre / "dataset.json").write_text(json.dumps({"channel_names": {"0": "nonorm"}, "labels": LABELS,
                                                  "numTraining": 1, "file_ending": ".nii.gz"}))
    _write_preprocessed_case(pre / f"{preset.plans}_{preset.configuration}")
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "nnUNet_preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "nnUNet_results"))
    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINERS_DIR))
    for name in SCHEDULE_ENV.values():
        monkeypatch.delenv(name, raising=False)

    def make(trainer_name: str, epochs: int | None = None):
        from nnunetv2.run.run_training import get_trainer_from_args

        if epochs is not None:
            monkeypatch.setenv(SCHEDULE_ENV["epochs"], str(epochs))
        trainer = get_trainer_from_args(DATASET, preset.configuration, "all", trainer_name, preset.plans,
                                        device=torch.device("cpu"))
        trainer.initialize()
        return trainer

    return make


def _write_preprocessed_case(folder) -> None:
    """One case in nnU-Net's own preprocessed format (initialize() infers the dataset class from the files)."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    folder.mkdir(parents=True)
    data = np.random.default_rng(0).random((1, 32, 32, 32), dtype=np.float32)
    seg = np.zeros((1, 32, 32, 32), dtype=np.int8)
    seg[0, 8:16, 8:16, 8:16] = 1
    nnUNetDatasetBlosc2.save_case(data, seg, {"spacing": [1.5] * 3}, str(folder / "case_000"),
                                  chunks=(1, 32, 32, 32), blocks=(1, 16, 16, 16))


def test_paper_trainer_is_found_through_nnunet_exttrainer_with_adam_at_1e_4_and_200_epochs(make_trainer):
    trainer = make_trainer("nnUNetTrainerCadsFlavor")
    assert type(trainer).__name__ == "nnUNetTrainerCadsFlavor"
    assert type(trainer.optimizer) is torch.optim.Adam
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (FLAVOR_LR, 0.0)
    assert trainer.num_epochs == 200


def test_learning_rate_follows_cosine_annealing_over_the_configured_epochs(make_trainer):
    trainer = make_trainer("nnUNetTrainerCadsFlavor", epochs=7)
    assert trainer.num_epochs == 7
    seen = []
    for epoch in range(7):
        trainer.lr_scheduler.step(epoch)  # what nnU-Net's on_train_epoch_start does
        seen.append(trainer.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([cosine(e, 7) for e in range(7)], rel=1e-12)
    assert seen[0] == FLAVOR_LR and seen[-1] < seen[0] / 10


def test_flavor_trainer_turns_mirroring_off_for_training_and_prediction(make_trainer):
    trainer = make_trainer("nnUNetTrainerCadsFlavor")
    *_, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert mirror_axes is None and trainer.inference_allowed_mirroring_axes is None


def test_flavor_trainer_samples_foreground_for_half_the_batch_and_uses_dice_ce_on_one_output(make_trainer):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss

    trainer = make_trainer("nnUNetTrainerCadsFlavor")
    assert trainer.oversample_foreground_percent == 0.5
    assert trainer.enable_deep_supervision is False and type(trainer.loss) is DC_and_CE_loss
    assert trainer.batch_size == 2 and trainer.configuration_manager.patch_size == [32, 32, 32]


def test_one_training_step_runs_nnunets_loss_on_a_single_output_and_updates_the_weights_with_adam(make_trainer):
    trainer = make_trainer("nnUNetTrainerCadsFlavor")
    torch.manual_seed(0)
    batch = {"data": torch.rand(2, 1, 32, 32, 32), "target": torch.randint(0, 3, (2, 1, 32, 32, 32)).float()}
    before = [p.detach().clone() for p in trainer.network.parameters()]
    loss = float(trainer.train_step(batch)["loss"])
    assert math.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.network.parameters()))
    assert trainer.optimizer.state  # Adam keeps moments once it has stepped


def test_smoke_flavor_trainer_keeps_the_flavor_optimizer_with_the_smoke_trainers_schedule(make_trainer):
    trainer = make_trainer("nnUNetTrainerCadsFlavorSmoke")
    smoke = next(c for c in type(trainer).__mro__ if c.__name__ == "nnUNetTrainerCadsSmoke")
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch) == (smoke.SMOKE_EPOCHS,
                                                                      smoke.SMOKE_ITERATIONS_PER_EPOCH)
    assert type(trainer.optimizer) is torch.optim.Adam and trainer.optimizer.param_groups[0]["lr"] == FLAVOR_LR
    assert trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[-1] is None
