"""Training presets as data, and the nnU-Net commands and environments built from them."""

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
    plan_command,
    train_command,
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


def test_plan_command_writes_the_preset_plans_with_small_patch_settings():
    cmd = plan_command(551, load_preset("smoke"))
    assert cmd[cmd.index("-d") + 1] == "551"
    assert cmd[cmd.index("-overwrite_plans_name") + 1] == "nnUNetPlansCadsSmoke"
    assert cmd[cmd.index("-gpu_memory_target") + 1] == "0.15"
    assert cmd[cmd.index("-overwrite_target_spacing") + 1:][:3] == ["3.0", "3.0", "3.0"]


def test_paper_plan_command_keeps_nnunet_defaults():
    cmd = plan_command(551, load_preset("paper"))
    assert "-gpu_memory_target" not in cmd and "-overwrite_target_spacing" not in cmd


def test_train_command_names_trainer_plans_fold_device_and_continues_from_a_checkpoint():
    cmd = train_command(553, load_preset("smoke"))
    assert cmd[3:] == ["553", "3d_fullres", "all", "-tr", "nnUNetTrainerCadsSmoke", "-p", "nnUNetPlansCadsSmoke",
                       "-device", "cpu", "--c"]


def test_nnunet_environment_is_built_for_the_child_without_touching_this_process(tmp_path):
    before = dict(os.environ)
    dirs = NnunetDirs(tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
    env = training_env(dirs, load_preset("smoke"), base={"PATH": "/bin"})
    assert dict(os.environ) == before
    assert env["nnUNet_raw"] == str((tmp_path / "raw").resolve())
    assert env["nnUNet_results"] == str((tmp_path / "res").resolve())
    assert Path(env["nnUNet_extTrainer"]) == TRAINERS_DIR.resolve()
    assert env["nnUNet_n_proc_DA"] == "0"  # CPU: augmentation in-process
    assert env[SCHEDULE_ENV["epochs"]] == "2" and env["PATH"] == "/bin"


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
