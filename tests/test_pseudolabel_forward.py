"""The pseudo-labels' preprocessing and sliding-window forward pass (cadsflow.pseudolabel.infer.preprocess and
predict_logits) against nnU-Net's own run_case_npy and predict_logits_from_preprocessed_data, with constructed plans
and a small randomly initialised nnU-Net U-Net (no trained model needed)."""

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

import cadsflow.pseudolabel.cpu_compile as cpu_compile
import cadsflow.pseudolabel.infer as infer

PATCH = [16, 12, 16]
CLASSES = 5


def small_predictor(use_gaussian=True) -> nnUNetPredictor:
    """An nnUNetPredictor on the CPU around a three-stage U-Net with random weights (seeded), mirroring off as the
    factory's load_predictor sets it."""
    torch.manual_seed(0)
    network = PlainConvUNet(1, 3, [4, 8, 16], torch.nn.Conv3d, 3, [1, 2, 2], 2, CLASSES, 2, conv_bias=True,
                            norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                            nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    for module in network.modules():  # give the norms' affine parameters non-default values
        if isinstance(module, torch.nn.InstanceNorm3d):
            torch.nn.init.normal_(module.weight, 1.0, 0.3)
            torch.nn.init.normal_(module.bias, 0.0, 0.3)
    network.eval()
    predictor = nnUNetPredictor(tile_step_size=1.0, use_gaussian=use_gaussian, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    labels = {"background": 0, **{f"class{i}": i for i in range(1, CLASSES)}}
    predictor.manual_initialization(network, PlansManager({"configurations": {}}),
                                    ConfigurationManager({"patch_size": PATCH, "architecture": {}}),
                                    [network.state_dict()], {"labels": labels}, "test", None)
    return predictor


def image(shape, seed=1) -> torch.Tensor:
    return torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("use_gaussian", [True, False])
def test_one_tile_arithmetic_with_the_eager_network_equals_nnunets_bit_for_bit(monkeypatch, use_gaussian):
    predictor = small_predictor(use_gaussian)
    monkeypatch.setattr(cpu_compile, "tile_network", lambda p, shape: p.network)
    x = image((11, 9, 14))  # smaller than the patch on every axis: zero-padded to one tile
    ours = infer.predict_logits(predictor, x)
    theirs = predictor.predict_logits_from_preprocessed_data(x).cpu()
    assert ours.dtype == theirs.dtype == torch.half and ours.shape == theirs.shape == (CLASSES, 11, 9, 14)
    assert torch.equal(ours, theirs)


def test_the_compiled_tile_network_gives_the_eager_networks_logits_up_to_float32_rounding_and_is_kept():
    predictor = small_predictor()
    compiled = cpu_compile.tile_network(predictor, (1, *PATCH))
    x = image(PATCH)[None]
    with torch.inference_mode():
        ours, eager = compiled(x), predictor.network(x)
    assert compiled is not predictor.network
    assert ours.shape == eager.shape == (1, CLASSES, *PATCH)
    assert torch.allclose(ours, eager, rtol=1e-4, atol=1e-5)
    assert cpu_compile.tile_network(predictor, (1, *PATCH)) is compiled  # traced once per job, not per volume


def test_tracing_the_weights_as_constants_compiles_the_network_a_module_trace_compiles():
    """cpu_compile traces the network's weights as constants instead of scripting its submodules; the compiled
    network computes what the compiled module trace computes, bit for bit, and the weights keep their grad flags."""
    predictor = small_predictor()
    network = predictor.network
    network.requires_grad_(True)
    compiled = cpu_compile.tile_network(predictor, (1, *PATCH))
    assert all(p.requires_grad for p in network.parameters())
    assert not list(compiled.parameters())  # constants: nothing left to register
    with torch.no_grad():
        module_trace = torch.jit.optimize_for_inference(torch.jit.trace(network.eval(), torch.zeros((1, 1, *PATCH)),
                                                                        check_trace=False))
    x = image(PATCH, seed=7)[None]
    with torch.inference_mode():
        assert torch.equal(compiled(x), module_trace(x))


@pytest.mark.parametrize("shape, step, use_gaussian", [
    ((20, 12, 16), 1.0, True),  # two tiles along the first axis, the second one overlapping (20 = 16 + 4)
    ((40, 25, 9), 1.0, False),  # 3 x 3 tiles, zero-padded along the last axis
    ((37, 30, 16), 0.5, True),  # nnU-Net's default half-tile step: blended Gaussian-weighted tiles
])
def test_a_sliding_window_with_the_eager_network_equals_nnunets_bit_for_bit(monkeypatch, shape, step, use_gaussian):
    predictor = small_predictor(use_gaussian)
    predictor.tile_step_size = step
    monkeypatch.setattr(cpu_compile, "tile_network", lambda p, shape: p.network)
    x = image(shape, seed=3)
    ours = infer.predict_logits(predictor, x)
    theirs = predictor.predict_logits_from_preprocessed_data(x).cpu()
    assert ours.dtype == theirs.dtype == torch.half and ours.shape == theirs.shape == (CLASSES, *shape)
    assert torch.equal(ours, theirs)


def test_a_sliding_window_with_the_compiled_network_keeps_nnunets_labels():
    predictor = small_predictor()
    predictor.tile_step_size = 0.5
    x = image((37, 30, 16), seed=5)
    ours = infer.predict_logits(predictor, x).float()
    theirs = predictor.predict_logits_from_preprocessed_data(x).cpu().float()
    assert torch.allclose(ours, theirs, rtol=1e-2, atol=1e-2)  # half-precision sums of float32-rounded logits
    assert (ours.argmax(0) == theirs.argmax(0)).float().mean() > 0.999


def test_several_folds_go_through_nnunet_unchanged():
    predictor = small_predictor()
    predictor.list_of_parameters = predictor.list_of_parameters * 2  # two folds with the same weights
    x = image((20, 12, 16))
    assert torch.equal(infer.predict_logits(predictor, x), predictor.predict_logits_from_preprocessed_data(x).cpu())
    assert predictor not in cpu_compile.COMPILED
    assert "_cads_tile_network" not in vars(predictor)  # nnU-Net's object is left as it was made


def preprocessing_predictor(transpose_forward, data_kwargs) -> nnUNetPredictor:
    """A predictor whose plans hold only what nnU-Net's DefaultPreprocessor reads: CT normalisation with given
    foreground intensities, resampling to 4.5 mm with the given data resampling arguments."""
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.plans_manager = PlansManager({
        "configurations": {}, "transpose_forward": transpose_forward,
        "transpose_backward": [int(i) for i in np.argsort(transpose_forward)],
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": 40.0, "std": 200.0, "percentile_00_5": -900.0, "percentile_99_5": 1200.0}}})
    predictor.configuration_manager = ConfigurationManager({
        "preprocessor_name": "DefaultPreprocessor", "spacing": [4.5, 4.5, 4.5], "patch_size": PATCH,
        "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False], "architecture": {},
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": data_kwargs,
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None}})
    predictor.dataset_json = {"labels": {"background": 0, "a": 1}}
    return predictor


@pytest.mark.parametrize("transpose_forward, spacing", [([0, 1, 2], (1.5, 1.5, 1.5)), ([2, 0, 1], (5.0, 1.5, 1.2))])
def test_preprocessing_is_nnunets_run_case_npy_with_the_crop_box_the_label_export_needs(transpose_forward, spacing):
    predictor = preprocessing_predictor(transpose_forward, {"is_seg": False, "order": 3, "order_z": 0,
                                                            "force_separate_z": None})
    rng = np.random.default_rng(4)
    image = np.zeros((1, 20, 31, 27), dtype=np.float32)  # a zero border: cropped away by nnU-Net's nonzero box
    image[0, 2:18, 3:29, 1:26] = rng.normal(0, 300, (16, 26, 25))
    theirs, _, their_properties = predictor.configuration_manager.preprocessor_class(verbose=False).run_case_npy(
        image.copy(), None, {"spacing": list(spacing)}, predictor.plans_manager, predictor.configuration_manager,
        predictor.dataset_json)
    ours, properties = infer.preprocess(predictor, image.copy(), spacing)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)
    assert properties == their_properties
    box = [[2, 18], [3, 29], [1, 26]]  # the image's nonzero box, in the plans' transposed axis order
    assert properties["bbox_used_for_cropping"] == [box[i] for i in transpose_forward]
