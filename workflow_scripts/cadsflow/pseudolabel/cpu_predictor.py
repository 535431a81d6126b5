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
from pathlib import Path
from typing import Any

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


def network_from_plans(model_dir: str | Path, fold: str) -> bool:
    """Whether training recorded that this fold's trainer builds its network from the plans (nnU-Net's own way)."""
    record = read_network_record(Path(model_dir) / f"fold_{fold}")
    return record is not None and record["network"] == NETWORK_FROM_PLANS


def load_cpu_predictor(model_dir: str | Path, fold: str, checkpoint_name: str, tile_step_size: float
                       ) -> CpuPredictor | None:
    """The model of `model_dir`/fold_`fold` for CPU inference; None when its checkpoint names another trainer than
    the network record (the caller then loads it through nnU-Net)."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model_dir = Path(model_dir)
    fold_dir = model_dir / f"fold_{fold}"
    record = read_network_record(fold_dir)
    checkpoint = torch.load(fold_dir / checkpoint_name, map_location=torch.device("cpu"), weights_only=False)
    if record is None or record["trainer"] != checkpoint["trainer_name"]:
        log.info("%s: the checkpoint's trainer %s is not the one the network record names (%s); loading through "
                 "nnU-Net", fold_dir, checkpoint["trainer_name"], None if record is None else record["trainer"])
        return None
    dataset_json = load_json(str(model_dir / "dataset.json"))
    plans = PlansManager(load_json(str(model_dir / "plans.json")))
    configuration = plans.get_configuration(checkpoint["init_args"]["configuration"])
    label_manager = plans.get_label_manager(dataset_json)
    network = get_network_from_plans(  # nnUNetTrainer.build_network_architecture, nnunetv2 2.8.1
        configuration.network_arch_class_name,
        configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        determine_num_input_channels(plans, configuration, dataset_json),
        label_manager.num_segmentation_heads,
        allow_init=True,
        deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    return CpuPredictor(
        plans_manager=plans, configuration_manager=configuration, dataset_json=dataset_json,
        label_manager=label_manager, network=network, list_of_parameters=[checkpoint["network_weights"]],
        trainer_name=checkpoint["trainer_name"],
        allowed_mirroring_axes=checkpoint.get("inference_allowed_mirroring_axes"), tile_step_size=tile_step_size)
