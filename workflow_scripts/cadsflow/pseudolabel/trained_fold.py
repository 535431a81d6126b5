"""One fold of a trained nnU-Net model folder, read once for inference, and its network built by a given builder.

What nnUNetPredictor.initialize_from_trained_model_folder (nnunetv2 2.8.1) reads for one fold: the checkpoint, the
plans, the configuration the checkpoint was trained with, dataset.json and the label manager. Both of the project's
loaders use it (cadsflow.pseudolabel.infer: nnU-Net's predictor with the trainer's network builder;
cadsflow.pseudolabel.cpu_predictor: the plans' builder without the trainer), so a job loads each file once, also when
the light loader declines the model and nnU-Net's takes over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainedFold:
    """The files of `model_dir`/fold_`fold` that inference reads, loaded (the checkpoint on the CPU)."""

    model_dir: Path
    fold: str
    checkpoint: dict
    plans_manager: Any
    configuration_manager: Any
    dataset_json: dict
    label_manager: Any

    @property
    def fold_dir(self) -> Path:
        return self.model_dir / f"fold_{self.fold}"

    @property
    def trainer_name(self) -> str:
        return self.checkpoint["trainer_name"]

    @property
    def weights(self) -> dict:
        return self.checkpoint["network_weights"]

    @property
    def mirroring_axes(self) -> tuple | None:
        return self.checkpoint.get("inference_allowed_mirroring_axes")

    @property
    def num_input_channels(self) -> int:
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

        return determine_num_input_channels(self.plans_manager, self.configuration_manager, self.dataset_json)

    def network(self, builder: Callable[[TrainedFold], Any]):
        """The network `builder` makes of this fold (deep supervision off), with the checkpoint's weights."""
        network = builder(self)
        network.load_state_dict(self.weights)
        return network


def read_trained_fold(model_dir: str | Path, fold: str, checkpoint_name: str) -> TrainedFold:
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model_dir = Path(model_dir)
    checkpoint = torch.load(model_dir / f"fold_{fold}" / checkpoint_name, map_location=torch.device("cpu"),
                            weights_only=False)
    dataset_json = load_json(str(model_dir / "dataset.json"))
    plans = PlansManager(load_json(str(model_dir / "plans.json")))
    return TrainedFold(
        model_dir=model_dir, fold=str(fold), checkpoint=checkpoint, plans_manager=plans,
        configuration_manager=plans.get_configuration(checkpoint["init_args"]["configuration"]),
        dataset_json=dataset_json, label_manager=plans.get_label_manager(dataset_json))
