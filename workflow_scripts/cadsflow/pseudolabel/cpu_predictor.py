"""A trained nnU-Net model loaded for CPU inference without nnU-Net's inference module or the trainer class.

`nnunetv2.inference.predict_from_raw_data` imports torch._dynamo at module level, and finding the trainer class
imports nnU-Net's trainer module (torch._dynamo, matplotlib, seaborn): together 2.2 s of every prediction job on top
of torch (measured: 4.6 s for both imports, 2.4 s for torch and the modules used here). A demo run has ~36 such jobs.

`CpuPredictor` holds what cadsflow.pseudolabel.infer's `nearest` path reads of an nnUNetPredictor (plans,
configuration, dataset.json, label manager, network, weights, tile step, Gaussian), built as nnU-Net builds it:
- the network with nnU-Net's get_network_from_plans and the configuration's architecture, exactly what
  nnUNetTrainer.build_network_architecture does; used only where training recorded that the model's trainer builds
  its network that way (cadsflow.specialists.nnunet.NETWORK_RECORD beside the checkpoint, naming the trainer the
  checkpoint names), so a trainer with its own network always goes through nnU-Net's loading;
- the checkpoint's weights loaded into it, mirroring off (Online Methods 6.1), one fold.
Its predictions are nnU-Net's (tests/test_specialists_smoke_training.py compares the logits with nnUNetPredictor's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cadsflow.pseudolabel.trained_fold import TrainedFold
from cadsflow.specialists.nnunet import NETWORK_FROM_PLANS, read_network_record

log = logging.getLogger(__name__)


@dataclass(eq=False)  # compared and hashed by identity, as an nnUNetPredictor (infer._COMPILED keys on it)
class CpuPredictor:
    """The parts of an nnUNetPredictor that CPU inference with one fold and no mirroring reads."""

    plans_manager: Any
    configuration_manager: Any
    dataset_json: dict
    label_manager: Any
    network: Any
    list_of_parameters: list
    trainer_name: str
    allowed_mirroring_axes: tuple | None
    tile_step_size: float
    use_gaussian: bool = True
    use_mirroring: bool = False

    @property
    def device(self):
        import torch

        return torch.device("cpu")


def plans_network(fold: TrainedFold):
    """nnUNetTrainer.build_network_architecture (nnunetv2 2.8.1): get_network_from_plans, deep supervision off."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    configuration = fold.configuration_manager
    return get_network_from_plans(
        configuration.network_arch_class_name,
        configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        fold.num_input_channels,
        fold.label_manager.num_segmentation_heads,
        allow_init=True,
        deep_supervision=False)


def cpu_predictor(fold: TrainedFold, tile_step_size: float) -> CpuPredictor | None:
    """`fold` for CPU inference; None unless training recorded beside it that the trainer the checkpoint names builds
    its network from the plans (the caller then loads it through nnU-Net)."""
    record = read_network_record(fold.fold_dir)
    if record is None or record["network"] != NETWORK_FROM_PLANS or record["trainer"] != fold.trainer_name:
        log.info("%s: no network record saying that %s builds its network from the plans (%s); loading through "
                 "nnU-Net", fold.fold_dir, fold.trainer_name, record)
        return None
    return CpuPredictor(
        plans_manager=fold.plans_manager, configuration_manager=fold.configuration_manager,
        dataset_json=fold.dataset_json, label_manager=fold.label_manager, network=fold.network(plans_network),
        list_of_parameters=[fold.weights], trainer_name=fold.trainer_name, allowed_mirroring_axes=fold.mirroring_axes,
        tile_step_size=tile_step_size)
