"""nnU-Net's fingerprint, plans and preprocessing, run in the calling process (one Python process per job).

`nnUNetv2_plan_and_preprocess` starts three pools of spawned workers (integrity check, fingerprint, preprocessing);
each worker imports torch and nnU-Net again. On a cluster node with many images that pays off; for the demo's
handful of small volumes it is most of the job (measured: 48 s for two 3 mm volumes, of which about 3 s is work).
So the steps here call nnU-Net's own classes directly:

- with `num_processes > 1` nnU-Net's own pooled code runs unchanged (the paper preset);
- with `num_processes == 1` the same per-case functions (`DatasetFingerprintExtractor.analyze_case`,
  `DefaultPreprocessor.run_case_save`) run one case after another in this process, and the fingerprint is
  aggregated exactly as nnU-Net aggregates it.

The planner is nnU-Net's (`preset.planner`, found by name in nnU-Net's package as `-pl` would find it); a preset may
narrow its network (`network.base_features`, `network.max_features`) through the planner's own attributes, so the
patch size and the architecture in the plans stay consistent (nnU-Net derives the patch from the network's memory
estimate); a preset may also set the spline orders of the plans' resampling (`resampling_orders`: `image` into every
configuration's `resampling_fn_data_kwargs`, which nnU-Net's preprocessing reads for training and inference alike;
`labels` into `resampling_fn_seg_kwargs`, the training label maps' resampling). nnU-Net reads its folders from the
environment at call time: the job's entry sets them (cadsflow.specialists.__main__), and `check_nnunet_folders`
refuses to run against other folders.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from cadsflow.specialists.presets import Preset

NNUNET_FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
FINGERPRINT_PERCENTILES = (0.5, 50.0, 99.5)  # nnU-Net's DatasetFingerprintExtractor.run


class PlanningError(RuntimeError):
    """nnU-Net's planning cannot run or left no plans; the message names the dataset and the folder."""


def check_nnunet_folders(expected: dict[str, str]) -> None:
    """Refuse to run nnU-Net in this process unless its folder variables are exactly `expected` (resolved paths)."""
    wrong = {k: os.environ.get(k) for k in NNUNET_FOLDER_VARIABLES if os.environ.get(k) != expected[k]}
    if wrong:
        raise PlanningError(f"nnU-Net's folders in this process are {wrong}, expected "
                            f"{ {k: expected[k] for k in wrong} }; run the step through "
                            "`python -m cadsflow.specialists`, which sets them for its own process")


def plan_and_preprocess(dataset_id: int, dataset_name: str, preset: Preset) -> Path:
    """Fingerprint, plan and preprocess one raw dataset for the preset's configuration; return the plans file."""
    plans_file = plan(dataset_id, dataset_name, preset)
    preprocess(dataset_id, dataset_name, preset)
    return plans_file


def plan(dataset_id: int, dataset_name: str, preset: Preset) -> Path:
    """Check (if the preset asks), fingerprint and plan one raw dataset with the preset's planner; return the plans
    file. Nothing is preprocessed: a caller that derives its own configuration from these plans (the model flavors,
    cadsflow.flavors.training) preprocesses only that one."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    raw = Path(str(nnUNet_raw)) / dataset_name
    if preset.verify_dataset_integrity:
        verify_dataset_integrity(str(raw), preset.num_processes)
    extract_fingerprint(dataset_id, preset.num_processes, preset.fingerprint_samples)
    planner = _planner(dataset_id, preset)
    planner.plan_experiment()
    plans_file = Path(str(nnUNet_preprocessed)) / dataset_name / f"{preset.plans}.json"
    if not plans_file.is_file():
        raise PlanningError(f"{dataset_name}: nnU-Net's planner {preset.planner} wrote no {plans_file}")
    if any(order is not None for order in preset.resampling_orders.values()):
        set_resampling_orders(plans_file, preset.resampling_orders)
    return plans_file


# what each key of a preset's resampling_orders sets in a configuration of nnU-Net's plans
RESAMPLING_KWARGS = {"image": "resampling_fn_data_kwargs", "labels": "resampling_fn_seg_kwargs"}


def set_resampling_orders(plans_file: Path, orders: dict[str, int | None]) -> None:
    """Write the spline orders `orders` (image, labels; None keeps the planner's) into every configuration of a plans
    file. nnU-Net's planner writes 3 for images and 1 for labels (each label's mask resampled on its own: one
    resampling per class; order 0 resamples the label map once, by nearest neighbour). Probabilities keep theirs."""
    from cadsflow.atomic import write_text

    plans = _load_json(plans_file)
    for name, configuration in plans.get("configurations", {}).items():
        for key, order in orders.items():
            if order is None:
                continue
            kwargs = configuration.get(RESAMPLING_KWARGS[key])
            if kwargs is None:
                if "inherits_from" in configuration:
                    continue  # the parent's kwargs apply
                raise PlanningError(f"{plans_file}: configuration {name} has no {RESAMPLING_KWARGS[key]} to set")
            kwargs["order"] = int(order)
    write_text(plans_file, json.dumps(plans, indent=4))


def extract_fingerprint(dataset_id: int, num_processes: int, samples: int | None = None) -> dict:
    """nnU-Net's dataset fingerprint (dataset_fingerprint.json), pooled or, with one process, case by case here.

    `samples` overrides how many foreground intensities nnU-Net draws in all (its 1e8 costs seconds of sampling and
    percentiles and GBs of memory on a handful of demo cases; 1e6 estimates the same CT statistics closely).
    """
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    extractor = DatasetFingerprintExtractor(dataset_id, num_processes, verbose=False)
    extractor.show_progress_bar = False
    if samples is not None:
        extractor.num_foreground_voxels_for_intensitystats = samples
    if num_processes > 1:
        return extractor.run(overwrite_existing=True)
    return _serial_fingerprint(extractor)


def preprocess(dataset_id: int, dataset_name: str, preset: Preset) -> None:
    """Preprocess the preset's configuration (pooled, or case by case here) and copy the references like nnU-Net."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    pre = Path(str(nnUNet_preprocessed)) / dataset_name
    plans_manager = PlansManager(str(pre / f"{preset.plans}.json"))
    configuration = plans_manager.get_configuration(preset.configuration)
    preprocessor = configuration.preprocessor_class(verbose=False)
    preprocessor.show_progress_bar = False
    raw = Path(str(nnUNet_raw)) / dataset_name
    dataset_json = _load_json(pre / "dataset.json")
    cases = get_filenames_of_train_images_and_targets(str(raw), dataset_json)
    if preset.num_processes > 1:
        preprocessor.run(dataset_id, preset.configuration, preset.plans, num_processes=preset.num_processes)
    else:
        out = pre / configuration.data_identifier
        if out.is_dir():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for case, files in cases.items():
            preprocessor.run_case_save(str(out / case), files["images"], files["label"], plans_manager,
                                       configuration, dataset_json)
    # nnU-Net keeps the references next to the preprocessed data (preprocess_dataset's gt_segmentations)
    references = pre / "gt_segmentations"
    references.mkdir(exist_ok=True)
    for case, files in cases.items():
        shutil.copyfile(files["label"], references / f"{case}{dataset_json['file_ending']}")


def _planner(dataset_id: int, preset: Preset):
    """nnU-Net's planner named by the preset, with the preset's narrower network where it sets one."""
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    planner_class = recursive_find_python_class(str(Path(nnunetv2.__path__[0]) / "experiment_planning"),
                                                preset.planner, current_module="nnunetv2.experiment_planning")
    if planner_class is None:
        raise PlanningError(f"preset {preset.name}: nnU-Net has no experiment planner {preset.planner!r}")
    kwargs = {"plans_name": preset.plans}
    if preset.gpu_memory_target_gb is not None:
        kwargs["gpu_memory_target_in_gb"] = preset.gpu_memory_target_gb
    spacing = None if preset.target_spacing_mm is None else [float(s) for s in preset.target_spacing_mm]
    planner = planner_class(dataset_id, preprocessor_name="DefaultPreprocessor", overwrite_target_spacing=spacing,
                            suppress_transpose=False, **kwargs)
    network = preset.network
    if network.get("base_features") is not None:
        planner.UNet_base_num_features = network["base_features"]
        planner.UNet_reference_com_nfeatures = network["base_features"]  # the memory reference scales with it
    if network.get("max_features") is not None:
        planner.UNet_max_features_3d = network["max_features"]
    return planner


def _serial_fingerprint(extractor) -> dict:
    """DatasetFingerprintExtractor.run without its pool: the same per-case analysis and the same aggregation."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.paths import nnUNet_preprocessed

    first = next(iter(extractor.dataset.values()))["images"][0]
    reader = determine_reader_writer_from_dataset_json(extractor.dataset_json, first)
    samples = int(extractor.num_foreground_voxels_for_intensitystats // len(extractor.dataset))
    results = [DatasetFingerprintExtractor.analyze_case(case["images"], case["label"], reader, samples)
               for case in extractor.dataset.values()]
    channels = len(extractor.dataset_json["channel_names"])
    intensities = [np.concatenate([r[2][c] for r in results]) for c in range(channels)]
    statistics = {}
    for c in range(channels):
        low, median, high = np.percentile(intensities[c], FINGERPRINT_PERCENTILES)
        statistics[c] = {"mean": float(np.mean(intensities[c])), "median": float(median),
                         "std": float(np.std(intensities[c])), "min": float(np.min(intensities[c])),
                         "max": float(np.max(intensities[c])), "percentile_99_5": float(high),
                         "percentile_00_5": float(low)}
    fingerprint = {
        "spacings": [r[1] for r in results],
        "shapes_after_crop": [r[0] for r in results],
        "foreground_intensity_properties_per_channel": statistics,
        "median_relative_size_after_cropping": np.median([r[4] for r in results], 0),
    }
    out = Path(str(nnUNet_preprocessed)) / extractor.dataset_name
    out.mkdir(parents=True, exist_ok=True)
    from batchgenerators.utilities.file_and_folder_operations import save_json

    save_json(fingerprint, str(out / "dataset_fingerprint.json"))
    return fingerprint


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())
