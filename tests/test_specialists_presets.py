"""Training presets as data, and the nnU-Net environments built from them."""

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from cadsflow.specialists.nnunet import (
    SCHEDULE_ENV,
    TRAINERS_DIR,
    NnunetDirs,
    nnunet_env,
    training_env,
)
from cadsflow.specialists.presets import PRESETS_YAML, PresetError, load_preset


def test_smoke_preset_trains_on_cpu_without_asking_for_a_gpu():
    smoke = load_preset("smoke")
    assert smoke.device == "cpu" and smoke.gpus == 0
    assert smoke.trainer == "nnUNetTrainerCadsSmoke" and smoke.configuration == "3d_fullres"


def test_paper_preset_trains_all_data_on_a_gpu_with_the_stock_schedule():
    paper = load_preset("paper")
    assert paper.device == "cuda" and paper.gpus == 1 and paper.fold == "all"
    assert paper.schedule == {"epochs": 1000, "iterations_per_epoch": 250, "val_iterations_per_epoch": 50}


def test_presets_use_trainers_that_the_trainer_folder_defines():
    source = (TRAINERS_DIR / "cads_trainers.py").read_text()
    for name in yaml.safe_load(PRESETS_YAML.read_text()):
        assert f"class {load_preset(name).trainer}(" in source


def test_unknown_preset_is_an_error_that_lists_the_known_ones():
    with pytest.raises(PresetError, match="paper.*smoke|smoke.*paper"):
        load_preset("huge")


def test_preset_with_an_unknown_key_is_rejected_naming_file_and_key(tmp_path):
    entry = yaml.safe_load(PRESETS_YAML.read_text())["smoke"]
    entry["epochz"] = 3
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump({"smoke": entry}))
    with pytest.raises(PresetError, match=r"presets\.yaml.*epochz"):
        load_preset("smoke", path)


def test_preset_fold_must_be_all_or_a_cross_validation_fold(tmp_path):
    entry = yaml.safe_load(PRESETS_YAML.read_text())["smoke"]
    entry["fold"] = 7
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump({"smoke": entry}))
    with pytest.raises(PresetError, match="fold"):
        load_preset("smoke", path)


def test_presets_differ_only_in_cost_fields_and_the_paper_preset_trains_nnunets_own_model():
    """What the demo changes to be cheap, listed: everything else (configuration, fold, planner, mirroring-free
    trainer family) is shared, and the paper preset keeps nnU-Net's own plans, network, schedule and export."""
    smoke, paper = load_preset("smoke"), load_preset("paper")
    differing = sorted(f.name for f in dataclasses.fields(smoke)
                       if f.name != "name" and getattr(smoke, f.name) != getattr(paper, f.name))
    assert differing == [
        "device", "fingerprint_samples", "gpu_memory_target_gb", "gpus",
        "infer_runtime_min_per_volume", "label_resampling", "mem_mb",
        "network", "num_processes", "plan_runtime_min", "plans", "resampling_orders", "schedule", "seed", "shard_size",
        "target_spacing_mm",
        "threads", "tile_step_size", "train_runtime_min", "trainer", "verify_dataset_integrity",
    ]
    assert (paper.planner, paper.plans, paper.trainer) == ("ExperimentPlanner", "nnUNetPlans", "nnUNetTrainerCadsNoMirroring")
    assert paper.network == {"base_features": None, "max_features": None}
    assert paper.gpu_memory_target_gb is None and paper.target_spacing_mm is None
    assert paper.resampling_orders == {"image": None, "labels": None}  # nnU-Net's own
    assert paper.seed is None and smoke.seed == 0  # nnU-Net does not seed; the demo gives the same models every run
    assert paper.label_resampling == "probabilities" and paper.verify_dataset_integrity
    assert (paper.configuration, paper.fold) == (smoke.configuration, smoke.fold) == ("3d_fullres", "all")


def test_smoke_preset_is_sized_for_a_cpu_demo():
    smoke = load_preset("smoke")
    assert smoke.schedule == {"epochs": 1, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1}
    assert smoke.network == {"base_features": 8, "max_features": 64}
    assert smoke.num_processes == 1  # nnU-Net's steps run case by case in the job's process, no spawned pools
    assert smoke.label_resampling == "nearest"
    assert smoke.resampling_orders == {"image": 1, "labels": 0}


def test_the_seed_is_a_model_setting():
    smoke = load_preset("smoke")
    assert "seed=0" in smoke.model_settings
    assert dataclasses.replace(smoke, seed=None).model_settings != smoke.model_settings  # a changed seed retrains


BAD_ORDERS = [{"image": -1, "labels": 0}, {"image": 1, "labels": 6}, {"image": 1.5, "labels": 0},
              {"image": True, "labels": 0}, {"image": "linear", "labels": 0}, {"image": 1},
              {"image": 1, "labels": 0, "probabilities": 1}, 1]
BAD_SEEDS = [-1, 1.5, True, "0"]  # a seed is null or a non-negative integer


@pytest.mark.parametrize("key, value",
                         [("resampling_orders", v) for v in BAD_ORDERS] + [("seed", v) for v in BAD_SEEDS])
def test_a_malformed_resampling_order_or_seed_is_rejected_naming_its_key(tmp_path, key, value):
    entry = yaml.safe_load(PRESETS_YAML.read_text())["smoke"]
    entry[key] = value
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump({"smoke": entry}))
    with pytest.raises(PresetError, match=key):
        load_preset("smoke", path)


def test_resampling_orders_are_written_into_every_configuration_of_the_plans(tmp_path):
    """nnU-Net's planner writes order 3 for images and 1 for labels; the preset's orders replace them, a null order
    keeps the planner's, probabilities keep theirs, and a configuration that inherits its kwargs keeps inheriting."""
    import json

    from cadsflow.specialists.planning import set_resampling_orders

    def configuration():
        return {"resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                       "force_separate_z": None}}

    plans = {"configurations": {"2d": configuration(), "3d_fullres": configuration(),
                                "3d_cascade_fullres": {"inherits_from": "3d_fullres"}}}
    path = tmp_path / "plans.json"
    for orders, expected in (({"image": 1, "labels": None}, (1, 1)), ({"image": None, "labels": 0}, (3, 0))):
        path.write_text(json.dumps(plans))
        set_resampling_orders(path, orders)
        written = json.loads(path.read_text())["configurations"]
        for name in ("2d", "3d_fullres"):
            got = written[name]
            assert (got["resampling_fn_data_kwargs"]["order"], got["resampling_fn_seg_kwargs"]["order"]) == expected
            assert got["resampling_fn_probabilities_kwargs"]["order"] == 1
        assert written["3d_cascade_fullres"] == {"inherits_from": "3d_fullres"}


def test_preset_label_resampling_must_be_a_known_export(tmp_path):
    entry = yaml.safe_load(PRESETS_YAML.read_text())["smoke"]
    entry["label_resampling"] = "bilinear"
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump({"smoke": entry}))
    with pytest.raises(PresetError, match="label_resampling"):
        load_preset("smoke", path)


def test_nnunet_environment_is_built_for_the_child_without_touching_this_process(tmp_path):
    before = dict(os.environ)
    dirs = NnunetDirs(tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
    env = training_env(dirs, load_preset("smoke"), base={"PATH": "/bin"})
    assert dict(os.environ) == before
    assert env["nnUNet_raw"] == str((tmp_path / "raw").resolve())
    assert env["nnUNet_results"] == str((tmp_path / "res").resolve())
    assert Path(env["nnUNet_extTrainer"]) == TRAINERS_DIR.resolve()
    assert env["nnUNet_n_proc_DA"] == "0"  # CPU: augmentation in-process
    assert env[SCHEDULE_ENV["epochs"]] == "1" and env["PATH"] == "/bin"


def test_planning_environment_does_not_set_augmentation_workers(tmp_path):
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0
    env = nnunet_env(NnunetDirs(tmp_path, tmp_path, tmp_path), base={})
    assert "nnUNet_n_proc_DA" not in env


@pytest.mark.parametrize("step", [0, 1.5, "half"])
def test_preset_tile_step_must_be_a_fraction_of_the_patch(tmp_path, step):
    entry = yaml.safe_load(PRESETS_YAML.read_text())["paper"]
    entry["tile_step_size"] = step
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump({"paper": entry}))
    with pytest.raises(PresetError, match=r"presets\.yaml.*'paper'.*tile_step_size"):
        load_preset("paper", path)


def test_paper_preset_keeps_nnunets_half_overlapping_tiles():
    assert load_preset("paper").tile_step_size == 0.5


def test_model_settings_change_with_the_schedule_but_not_with_inference_only_fields():
    smoke = load_preset("smoke")
    same_model = dataclasses.replace(smoke, shard_size=99, tile_step_size=0.25, device="cuda", threads=9)
    longer = dataclasses.replace(smoke, schedule={**smoke.schedule, "epochs": 3})
    assert same_model.model_settings == smoke.model_settings
    assert longer.model_settings != smoke.model_settings and "'epochs': 3" in longer.model_settings
    cubic = dataclasses.replace(smoke, resampling_orders={"image": 3, "labels": 0})  # preprocessing: replan, retrain
    assert cubic.model_settings != smoke.model_settings
