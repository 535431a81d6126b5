"""The final model's nnU-Net trainer samples by the oversampling table: chi-square tests (fixed seed) show that the
cases its training loader draws, and the classes its foreground patches are centred on, follow the written
probabilities. Runs the real trainer (found through nnUNet_extTrainer) on a tiny constructed preprocessed dataset on
the CPU: label-count table -> oversampling table -> trainer.initialize() and get_dataloaders()."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chisquare

from cadsflow.final.config import OversamplingRule
from cadsflow.final.oversampling import oversampling_table, write_table
from cadsflow.labels import load_label_space
from cadsflow.specialists.nnunet import TRAINERS_DIR

GROUP = 552
DATASET = "Dataset552_Vertebrae"
PLANS = "nnUNetPlansTiny"
SHAPE = (20, 20, 20)
PATCH = [16, 16, 16]
SPACE = load_label_space()
LABELS = SPACE.group_label_map(GROUP)  # L5 = 1 ... C5 = 20, C4 = 21, C3 = 22, C2 = 23, C1 = 24
C1, C2, C3 = LABELS["vertebrae_C1"], LABELS["vertebrae_C2"], LABELS["vertebrae_C3"]
L5, L4 = LABELS["vertebrae_L5"], LABELS["vertebrae_L4"]
# 14 cases; L5 and L4 in all (occurrence 14, p = 1). C1 in 1 case (p = 1/14: weight 14), C2 in 2 (p = 1/7: weight 7),
# C3 in 3 (p = 3/14 >= 0.16: weight 1). Image weights: case00 (C1, C2) 14, case01 (C2) 7, the other 12 cases 1;
# probabilities 14/33, 7/33, 1/33.
CASE_LABELS = {f"case{i:02d}": [L5, L4] for i in range(14)}
CASE_LABELS["case00"] += [C1, C2]
CASE_LABELS["case01"] += [C2]
for case_with_c3 in ("case02", "case03", "case04"):
    CASE_LABELS[case_with_c3] += [C3]
EXPECTED_P = {case: (14 if case == "case00" else 7 if case == "case01" else 1) / 33 for case in CASE_LABELS}
# one voxel per label, at distinct x so that a patch centred on it identifies the class (y = z = 10)
VOXEL_X = {L5: 9, L4: 11, C3: 13, C2: 15, C1: 17}
N_DRAWS = 6000
SEED = 20250914


def test_trainer_draws_cases_with_the_written_probabilities(oversampling_trainer):
    loader = oversampling_trainer.dataloader_train.data_loader
    np.random.seed(SEED)
    draws = np.concatenate([loader.get_indices() for _ in range(N_DRAWS // loader.batch_size)])
    cases = sorted(CASE_LABELS)
    observed = np.array([np.sum(draws == c) for c in cases])
    expected = np.array([EXPECTED_P[c] for c in cases]) * len(draws)
    assert chisquare(observed, expected).pvalue > 0.01
    # the same draws are far from nnU-Net's stock uniform sampling: the test can tell the two apart
    assert chisquare(observed, np.full(len(cases), len(draws) / len(cases))).pvalue < 1e-12


def test_foreground_patches_are_centred_on_the_cases_minority_classes_uniformly(oversampling_trainer):
    loader = oversampling_trainer.dataloader_train.data_loader
    _, _, _, properties = loader._data.load_case("case00")  # holds L5, L4 and the minority classes C1, C2
    chosen = _chosen_classes(loader, properties["class_locations"])
    assert set(chosen) == {C1, C2}  # never a majority class while a minority class is present
    observed = [chosen.count(C1), chosen.count(C2)]
    assert chisquare(observed, [N_DRAWS / 2, N_DRAWS / 2]).pvalue > 0.01


def test_foreground_patches_of_a_case_without_minority_classes_follow_nnunets_uniform_choice(oversampling_trainer):
    loader = oversampling_trainer.dataloader_train.data_loader
    _, _, _, properties = loader._data.load_case("case07")  # L5 and L4 only
    chosen = _chosen_classes(loader, properties["class_locations"])
    assert set(chosen) == {L5, L4}
    assert chisquare([chosen.count(L5), chosen.count(L4)], [N_DRAWS / 2, N_DRAWS / 2]).pvalue > 0.01


def test_trainer_turns_mirroring_off_and_validates_with_nnunets_own_loader(oversampling_trainer):
    assert oversampling_trainer.inference_allowed_mirroring_axes is None
    validation_loader = oversampling_trainer.dataloader_val.data_loader
    assert type(validation_loader).__name__ == "nnUNetDataLoader" and validation_loader.sampling_probabilities is None


def test_trainer_without_a_table_says_which_variable_to_set(tiny_dataset, monkeypatch):
    monkeypatch.delenv("CADS_OVERSAMPLING_TABLE")
    trainer = _trainer(tiny_dataset)
    trainer.initialize()
    with pytest.raises(RuntimeError, match="CADS_OVERSAMPLING_TABLE"):
        trainer.get_dataloaders()


def _chosen_classes(loader, class_locations) -> list[int]:
    """Run get_bbox (force_fg) N_DRAWS times; read the class off the patch's position."""
    by_lower_x = {x - loader.patch_size[0] // 2: label for label, x in VOXEL_X.items()}
    np.random.seed(SEED)
    chosen = []
    for _ in range(N_DRAWS):
        lower, _ = loader.get_bbox(SHAPE, True, class_locations)
        chosen.append(by_lower_x[lower[0]])
    return chosen


@pytest.fixture
def tiny_dataset(tmp_path, monkeypatch):
    """nnU-Net folders with a preprocessed 14-case dataset of group 552 and its oversampling table."""
    preprocessed = tmp_path / "nnUNet_preprocessed" / DATASET
    cases_dir = preprocessed / f"{PLANS}_3d_fullres"
    cases_dir.mkdir(parents=True)
    counts = {}
    for case, labels in CASE_LABELS.items():
        counts[case] = _write_case(cases_dir / case, labels)
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, **LABELS},
                    "numTraining": len(CASE_LABELS), "file_ending": ".nii.gz"}
    (preprocessed / "dataset.json").write_text(json.dumps(dataset_json))
    (preprocessed / f"{PLANS}.json").write_text(json.dumps(_plans()))
    count_table = pd.DataFrame.from_dict(counts, orient="index", columns=list(LABELS)).astype(np.int64)
    rule = OversamplingRule(threshold=0.16, minority=("vertebrae_C1", "vertebrae_C2", "vertebrae_C3",
                                                      "vertebrae_C4", "vertebrae_C5"))
    table_path = tmp_path / "oversampling_552.tsv"
    write_table(oversampling_table(GROUP, count_table, rule, SPACE), table_path)
    for name, value in {"nnUNet_preprocessed": tmp_path / "nnUNet_preprocessed", "nnUNet_raw": tmp_path / "raw",
                        "nnUNet_results": tmp_path / "nnUNet_results", "nnUNet_extTrainer": TRAINERS_DIR,
                        "nnUNet_n_proc_DA": 0, "CADS_OVERSAMPLING_TABLE": table_path}.items():
        monkeypatch.setenv(name, str(value))
    return {"dataset_json": dataset_json}


@pytest.fixture
def oversampling_trainer(tiny_dataset):
    torch.set_num_threads(1)
    trainer = _trainer(tiny_dataset)
    trainer.initialize()  # the first two steps of nnU-Net's on_train_start: network and loss, then the loaders
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    return trainer


def _trainer(tiny_dataset):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    trainer_class = recursive_find_trainer_class_by_name("nnUNetTrainerCadsOversamplingSmoke")
    plans = {**_plans(), "continue_training": False}
    return trainer_class(plans, "3d_fullres", "all", tiny_dataset["dataset_json"], device=torch.device("cpu"))


def _write_case(stem, labels: list[int]) -> dict[str, int]:
    """One preprocessed case in nnU-Net's numpy format; one voxel per label; returns its label counts."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy

    seg = np.zeros((1, *SHAPE), dtype=np.int8)
    locations = {label: np.zeros((0, 4), dtype=np.int64) for label in LABELS.values()}
    for label in labels:
        voxel = (0, VOXEL_X[label], 10, 10)
        seg[voxel] = label
        locations[label] = np.array([voxel], dtype=np.int64)
    data = np.random.default_rng(len(labels)).normal(size=(1, *SHAPE)).astype(np.float32)
    properties = {"class_locations": locations, "spacing": [3.0, 3.0, 3.0], "shape_before_cropping": SHAPE,
                  "bbox_used_for_cropping": [[0, s] for s in SHAPE],
                  "shape_after_cropping_and_before_resampling": SHAPE}
    nnUNetDatasetNumpy.save_case(data, seg, properties, str(stem))  # <case>.npz and <case>.pkl
    return {name: int(label in labels) for name, label in LABELS.items()}


def _plans() -> dict:
    """A hand-written nnU-Net 2.x plans file: one 3d_fullres configuration with a three-stage plain U-Net."""
    return {
        "dataset_name": DATASET,
        "plans_name": PLANS,
        "original_median_spacing_after_transp": [3.0, 3.0, 3.0],
        "original_median_shape_after_transp": list(SHAPE),
        "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 3.0, "mean": 0.0, "median": 0.0, "min": -3.0, "percentile_00_5": -2.5,
            "percentile_99_5": 2.5, "std": 1.0}},
        "configurations": {"3d_fullres": {
            "data_identifier": f"{PLANS}_3d_fullres",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": PATCH,
            "median_image_size_in_voxels": list(SHAPE),
            "spacing": [3.0, 3.0, 3.0],
            "normalization_schemes": ["CTNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                    "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True,
        }},
    }
