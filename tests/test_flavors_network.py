"""The flavor network (Online Methods 6.1) as nnU-Net builds it from the flavor plans, and the flavor presets."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from cadsflow.flavors.intensity import scale_percentiles
from cadsflow.flavors.network import FlavorPlansError, flavor_plans, write_flavor_plans
from cadsflow.flavors.settings import FlavorSettingsError, load_flavor_names, load_flavor_preset

PAPER_FEATURES = [32, 64, 128, 256, 512]  # Online Methods 6.1


def planner_plans(channels: int = 1) -> dict:
    """Plans as nnU-Net's ExperimentPlanner writes them (3d_fullres only), for a 1.5 mm dataset."""
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset990_FlavorTiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.5, 1.5, 1.5],
        "original_median_shape_after_transp": [40, 40, 40],
        "image_reader_writer": "NibabelIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [40, 40, 40],
                "median_image_size_in_voxels": [40.0, 40.0, 40.0],
                "spacing": [1.5, 1.5, 1.5],
                "normalization_schemes": ["CTNormalization"] * channels,
                "use_mask_for_norm": [False] * channels,
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {"n_stages": 4, "features_per_stage": [32, 64, 128, 256],
                                    "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 4,
                                    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 3, "n_conv_per_stage": [2] * 4,
                                    "n_conv_per_stage_decoder": [2] * 3, "conv_bias": True,
                                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                                    "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                    "nonlin_kwargs": {"inplace": True}},
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 1.0, "mean": 0.5, "median": 0.5, "min": 0.0, "percentile_00_5": 0.0,
                     "percentile_99_5": 1.0, "std": 0.2} for c in range(channels)},
    }


def built_network(plans: dict, configuration: str, num_classes: int = 4) -> torch.nn.Module:
    """The network exactly as nnU-Net's trainer builds it from plans (PlansManager -> get_network_from_plans)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(plans).get_configuration(configuration)
    return get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                  cm.network_arch_init_kwargs_req_import, 1, num_classes, allow_init=True,
                                  deep_supervision=False)


def first_conv(stacked_blocks):
    return stacked_blocks.blocks[0].conv1.conv


# -- presets ----------------------------------------------------------------------------------------------------


def test_paper_preset_is_online_methods_6_1():
    p = load_flavor_preset("paper")
    assert list(p.network.features_per_stage) == PAPER_FEATURES
    assert (p.network.blocks_per_stage, p.network.stride) == (2, 2)
    assert (p.patch_size, p.batch_size, p.schedule["epochs"]) == ((128, 128, 128), 2, 200)
    assert p.intensity_percentiles == (5.0, 95.0)
    assert load_flavor_names() == ("GT", "Pseudo", "Shape")


def test_a_patch_the_network_cannot_halve_four_times_is_rejected_naming_file_and_preset(tmp_path):
    import yaml

    from cadsflow.flavors.settings import FLAVORS_YAML

    data = yaml.safe_load(FLAVORS_YAML.read_text())
    data["presets"]["smoke"]["patch_size"] = [32, 32, 24]
    path = tmp_path / "flavors.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(FlavorSettingsError, match=r"flavors\.yaml: flavor preset 'smoke': patch_size \[32, 32, 24\] "
                                                  r"is not divisible by the network's total downsampling 16"):
        load_flavor_preset("smoke", path)


# -- plans -> flavor plans -> the network nnU-Net builds ---------------------------------------------------------


def test_paper_flavor_plans_build_a_five_stage_residual_unet_with_instance_norm_and_prelu():
    from dynamic_network_architectures.architectures.unet import ResidualUNet
    from dynamic_network_architectures.building_blocks.residual import BasicBlockD

    net = built_network(flavor_plans(planner_plans(), load_flavor_preset("paper")), "3d_cads_flavor")
    assert isinstance(net, ResidualUNet)
    encoder, decoder = net.encoder.stages, net.decoder.stages
    assert len(encoder) == 5 and len(decoder) == 4
    assert [s.output_channels for s in encoder] == PAPER_FEATURES
    assert [len(s.blocks) for s in encoder] == [2] * 5 and [len(s.blocks) for s in decoder] == [2] * 4
    assert all(isinstance(b, BasicBlockD) for s in (*encoder, *decoder) for b in s.blocks)
    assert [first_conv(s).stride for s in encoder] == [(1, 1, 1)] + [(2, 2, 2)] * 4
    assert {m.kernel_size for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size != (1, 1, 1)} \
        == {(3, 3, 3)}
    assert [t.out_channels for t in net.decoder.transpconvs] == [256, 128, 64, 32]
    # 18 residual units: conv1 (norm + PReLU), conv2 (norm), PReLU after the sum; 8 projected skips (norm); stem
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.instancenorm._InstanceNorm)]
    assert len(norms) == 1 + 18 * 2 + 8 and all(type(m) is torch.nn.InstanceNorm3d and m.affine for m in norms)
    activations = [m for m in net.modules() if type(m).__module__ == "torch.nn.modules.activation"]
    assert len(activations) == 1 + 18 * 2 and all(type(m) is torch.nn.PReLU for m in activations)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def test_smoke_flavor_network_segments_a_patch_at_full_resolution():
    torch.manual_seed(0)
    net = built_network(flavor_plans(planner_plans(), load_flavor_preset("smoke")), "3d_cads_flavor", num_classes=3)
    assert [s.output_channels for s in net.encoder.stages] == [4, 8, 16, 32, 64]
    with torch.no_grad():
        out = net(torch.rand(1, 1, 32, 32, 32))
    assert out.shape == (1, 3, 32, 32, 32)


def test_flavor_configuration_inherits_the_planned_spacing_and_overrides_patch_batch_and_normalization():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    source = planner_plans(channels=1)
    before = copy.deepcopy(source)
    plans = flavor_plans(source, load_flavor_preset("paper"))
    assert source == before  # the planner's plans are not modified
    assert plans["plans_name"] == "nnUNetPlansCadsFlavor"
    cm = PlansManager(plans).get_configuration("3d_cads_flavor")
    assert (cm.patch_size, cm.batch_size, cm.spacing) == ([128, 128, 128], 2, [1.5, 1.5, 1.5])
    assert (cm.normalization_schemes, cm.use_mask_for_norm) == (["NoNormalization"], [False])
    assert cm.data_identifier == "nnUNetPlansCadsFlavor_3d_cads_flavor"
    assert plans["configurations"]["3d_fullres"] == before["configurations"]["3d_fullres"]


def test_nnunet_preprocessing_with_the_flavor_plans_leaves_percentile_scaled_intensities_unchanged():
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(flavor_plans(planner_plans(), load_flavor_preset("smoke")))
    ct = np.full((40, 40, 40), -1000.0)
    ct[4:36, 4:36, 4:36] = np.linspace(-100, 300, 32)[None, None, :]  # a body with a ramp of soft tissue
    image = scale_percentiles(ct)[None]
    seg = np.zeros((1, 40, 40, 40), dtype=np.int16)
    seg[0, 10:20, 10:20, 10:20] = 1
    dataset_json = {"channel_names": {"0": "nonorm"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}
    data, _, props = DefaultPreprocessor(verbose=False).run_case_npy(
        image.copy(), seg, {"spacing": [1.5, 1.5, 1.5]}, plans, plans.get_configuration("3d_cads_flavor"),
        dataset_json)
    box = props["bbox_used_for_cropping"]
    expected = image[(slice(None), *(slice(lo, hi) for lo, hi in box))]
    np.testing.assert_array_equal(data, expected)


def test_plans_without_the_base_configuration_are_rejected_naming_plans_and_configurations():
    plans = planner_plans()
    plans["configurations"] = {"2d": plans["configurations"]["3d_fullres"]}
    with pytest.raises(FlavorPlansError, match=r"plans nnUNetPlans of Dataset990_FlavorTiny: no configuration "
                                               r"'3d_fullres' to inherit from \(have: 2d\)"):
        flavor_plans(plans, load_flavor_preset("paper"))


def test_flavor_plans_are_written_beside_the_planner_plans_under_their_own_name(tmp_path):
    source = tmp_path / "nnUNetPlans.json"
    source.write_text(json.dumps(planner_plans()))
    out = write_flavor_plans(source, load_flavor_preset("smoke"))
    assert out == tmp_path / "nnUNetPlansCadsFlavorSmoke.json"
    assert json.loads(out.read_text()) == flavor_plans(planner_plans(), load_flavor_preset("smoke"))
    assert json.loads(source.read_text()) == planner_plans()


# -- export-time intensity scaling ------------------------------------------------------------------------------


def test_percentile_scaling_maps_the_5th_and_95th_percentiles_to_0_and_1_and_clips():
    image = np.arange(101, dtype=np.int16).reshape(1, 1, 101)  # percentiles 5 and 95 are the values 5 and 95
    out = scale_percentiles(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    expected = np.clip((np.arange(101) - 5) / 90, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(out.ravel(), expected)
    assert (out.ravel()[[0, 5, 50, 95, 100]] == np.float32([0, 0, 0.5, 1, 1])).all()


def test_percentile_scaling_of_a_constant_image_is_zero_and_nonfinite_voxels_are_zero():
    np.testing.assert_array_equal(scale_percentiles(np.full((3, 3, 3), 40.0)), np.zeros((3, 3, 3), np.float32))
    image = np.arange(101, dtype=float)
    image[50] = np.nan
    out = scale_percentiles(image)
    assert out[50] == 0.0
    assert out[95] == pytest.approx((95 - np.percentile(np.delete(image, 50), 5)) /
                                    np.ptp(np.percentile(np.delete(image, 50), [5, 95])), rel=1e-6)


def test_percentile_scaling_takes_the_same_values_with_and_without_non_finite_voxels_to_skip():
    """An integer or all-finite image skips the masked copies; the values are those of the masked path."""
    rng = np.random.default_rng(3)
    ct = rng.integers(-1024, 2000, (12, 10, 8)).astype(np.int16)
    with_nan = ct.astype(float)
    with_nan[0, 0, 0] = np.nan  # the masked path: percentiles of the other voxels
    masked = scale_percentiles(with_nan)
    low, high = np.percentile(np.delete(with_nan.ravel(), 0), [5, 95])
    expected = np.clip((ct.astype(float) - low) / (high - low), 0, 1).astype(np.float32)
    np.testing.assert_array_equal(masked.ravel()[1:], expected.ravel()[1:])
    low, high = np.percentile(ct.astype(float), [5, 95])
    expected = np.clip((ct.astype(float) - low) / (high - low), 0, 1).astype(np.float32)
    for image in (ct, ct.astype(np.float32), ct.astype(float)):
        np.testing.assert_array_equal(scale_percentiles(image), expected)
    np.testing.assert_array_equal(scale_percentiles(np.full((2, 2, 2), np.inf)), np.zeros((2, 2, 2), np.float32))


def test_cli_scales_a_ct_file_keeping_its_grid_and_writes_flavor_plans(tmp_path):
    import nibabel as nib

    from cadsflow.flavors.__main__ import main
    from helpers import spacing_affine, write_nifti

    ct = np.arange(101, dtype=np.int16).reshape(101, 1, 1) * np.ones((1, 2, 3), np.int16)
    affine = spacing_affine((1.5, 1.5, 1.5), origin=(-10.0, 5.0, 2.0))
    src = write_nifti(tmp_path / "ct.nii.gz", ct, affine)
    out = tmp_path / "flavor_images" / "ct_0000.nii.gz"
    assert main(["scale", "--images", src, "--out", str(out), "--preset", "paper"]) == 0
    written = nib.load(str(out))
    np.testing.assert_array_equal(written.affine, affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), scale_percentiles(ct))
    assert written.get_data_dtype() == np.float32

    plans_json = tmp_path / "nnUNetPlans.json"
    plans_json.write_text(json.dumps(planner_plans()))
    assert main(["plans", "--source", str(plans_json), "--preset", "paper"]) == 0
    assert "3d_cads_flavor" in json.loads((tmp_path / "nnUNetPlansCadsFlavor.json").read_text())["configurations"]
