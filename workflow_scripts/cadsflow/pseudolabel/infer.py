"""Predict one shard of volumes with one specialist: one model load per job, one label map per volume.

A shard job loads the nnU-Net model once (`load_predictor`: nnU-Net's predictor, or for CPU inference with `nearest`
labels the same network and weights without nnU-Net's inference module, cadsflow.pseudolabel.cpu_predictor) and
predicts its volumes one after another. A volume that fails is reported and its shard-mates' label maps are kept.
Each label map is written atomically, so present means complete.

Snakemake decides what reruns, and the job obeys: a shard job that Snakemake runs predicts every member again
(a forced rerun, a changed input, parameter or post-processing table). The one exception keeps the benefit of a
resume after a kill: a job finds the marker `<report>.running` that an interrupted run of the same shard left, and
then skips a volume whose label map carries, in its NIfTI header (`descrip`), the fingerprint of exactly what it
would be made from now: the model checkpoint, the image, for head groups the brain map, the post-processing rules
and the inference settings (sha256 of each; see `fingerprint`).

Label maps are written on the standardized grid (RAS, axes x, y, z, the image's affine) with the group's label
ids; the shard report (TSV: volume_id, status, reason) says what happened to each member.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from cadsflow.atomic import atomic_path
from cadsflow.imageio import read_volume
from cadsflow.layout import MapFolders, MapIndex, job_folder, map_path
from cadsflow.pseudolabel.postprocess import (
    BrainGate,
    CleanupRules,
    brain_gate,
    is_head_group,
    keep_largest_components,
    neck_floor_slice,
    refine_head_labels,
    refine_head_neck_labels,
)
from cadsflow.pseudolabel.trained_fold import TrainedFold, read_trained_fold

HEAD_NECK_GROUP = 558  # without a brain, falls back to the neck above the upper vertebrae of group 552 (authors)

CHECKPOINT_NAME = "checkpoint_final.pth"
REPORT_COLUMNS = ("volume_id", "status", "reason")
OK, FAILED, QUARANTINED, SKIPPED_NO_BRAIN = "ok", "failed", "quarantined", "skipped_no_brain"
STATUSES = (OK, FAILED, QUARANTINED, SKIPPED_NO_BRAIN)
# Readers whose arrays are the nibabel (x, y, z) array transposed to (z, y, x), which is what we feed the model.
SUPPORTED_READERS = ("SimpleITKIO", "NibabelIO")
log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The specialist model cannot be used for pseudo-labeling; the message names the model folder."""


@dataclass(frozen=True)
class VolumeOutcome:
    volume_id: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class ImageTransform:
    """A voxel-wise change of the standardized image before the model sees it (the flavor models' percentile
    scaling, cadsflow.flavors.intensity); `key` names it in the label maps' fingerprint."""

    key: str
    apply: Callable[[np.ndarray], np.ndarray]


@dataclass
class ShardReport:
    outcomes: list[VolumeOutcome] = field(default_factory=list)
    model_loads: int = 0
    predicted: int = 0

    @property
    def failed(self) -> list[VolumeOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]


def label_map_path(out_dir: str | Path, volume_id: str) -> Path:
    """Where a volume's label map lives in a job's folder: <out_dir>/<volume_id>.nii.gz (cadsflow.layout.map_path)."""
    return map_path(out_dir, volume_id)


FINGERPRINT_PREFIX = "cads-pl:"  # NIfTI descrip: 80 bytes hold the prefix and a sha256 hex digest
RUNNING_SUFFIX = ".running"


def running_marker(report_path: str | Path) -> Path:
    """The marker a shard job keeps next to its report while it runs (an interrupted job leaves it behind)."""
    return Path(str(report_path) + RUNNING_SUFFIX)


def fingerprint(parts: dict) -> str:
    """sha256 of what a label map is made from: file digests and settings, as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stored_fingerprint(path: str | Path) -> str | None:
    """The fingerprint a label map carries in its header, or None (missing, unreadable or written elsewhere)."""
    try:
        descrip = bytes(nib.load(str(path)).header["descrip"]).rstrip(b"\0").decode("ascii", "replace")
    except Exception:  # a truncated or foreign file is simply not up to date
        return None
    return descrip[len(FINGERPRINT_PREFIX):] if descrip.startswith(FINGERPRINT_PREFIX) else None


def predict_shard(model_dir: str | Path, fold: str, volume_dirs, out_dir: str | Path, group: int,
                  device: str = "cpu", cleanup: CleanupRules | None = None,
                  brain_dir: MapFolders | MapIndex | None = None,
                  report_path: str | Path | None = None, checkpoint_name: str = CHECKPOINT_NAME,
                  tile_step_size: float = 0.5, label_resampling: str = "probabilities",
                  vertebrae_dir: MapFolders | MapIndex | None = None, image_transform: ImageTransform | None = None,
                  resume: bool | None = None) -> ShardReport:
    """Pseudo-label the standardized volumes in `volume_dirs` (results/standardized/<id>/) with one model load.

    Head groups (557, 558) need `brain_dir`, the folder (or folders: one per shard a job covers) of group 553's
    label maps of the same volumes; group 558 also takes `vertebrae_dir` (group 552's maps, one folder or several;
    either may be given as a MapIndex already built):
    a volume without brain is then kept from the lowest upper vertebra up (the authors' inference), and dropped only
    when it has no neck either. Maps are found with cadsflow.layout.MapIndex (one listing per folder).
    Writes <out_dir>/<id>.nii.gz per volume (out_dir is created, so a shard whose volumes are all quarantined still
    leaves its declared, empty folder) and, if given, the shard report at `report_path`.
    `image_transform` changes each image before prediction (and enters the fingerprint). `resume` None: resume when
    the report's running marker exists (module docstring); a caller that keeps its own marker (one job, several
    models) passes True or False.
    """
    model_dir = Path(model_dir)
    checkpoint = model_dir / f"fold_{fold}" / checkpoint_name
    brain_maps, vertebrae_maps = MapIndex.of(brain_dir), MapIndex.of(vertebrae_dir)
    if is_head_group(group) and (brain_maps is None or not brain_maps.folders):  # None, or an empty list of folders
        raise ValueError(f"group {group} is a head group: predict_shard needs brain_dir (group 553's label maps)")
    cleanup = cleanup or CleanupRules(keep_largest={})
    Path(out_dir).mkdir(parents=True, exist_ok=True)  # Snakemake checks that a declared directory exists
    report = ShardReport()
    predictor = None
    marker = running_marker(report_path) if report_path is not None else None
    if resume is None:
        resume = marker is not None and marker.is_file()
    if resume and marker is not None:
        log.info("%s: an interrupted run of this shard left its marker; volumes whose label map carries the "
                 "current fingerprint are kept", marker)
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("running\n")
    shared = {"group": group, "checkpoint": file_digest(checkpoint) if checkpoint.is_file() else str(checkpoint),
              "cleanup": repr(cleanup), "tile_step_size": tile_step_size, "label_resampling": label_resampling}
    if image_transform is not None:  # absent otherwise: the pseudo-labels' fingerprints stay what they were
        shared["image_transform"] = image_transform.key
    for volume_dir in map(Path, volume_dirs):
        volume_id = volume_dir.name
        try:
            job = _plan_volume(volume_dir, out_dir, group, shared, brain_maps, resume, vertebrae_maps)
            if job.outcome is not None:
                report.outcomes.append(job.outcome)
                continue
            if predictor is None:
                predictor = load_predictor(model_dir, fold, device, checkpoint_name, tile_step_size,
                                           label_resampling)
                report.model_loads += 1
            started = time.monotonic()
            _predict_volume(predictor, job, group, cleanup, label_resampling, image_transform)
            log.info("volume %s: group %s predicted in %.2f s", volume_id, group, time.monotonic() - started)
            report.predicted += 1
            report.outcomes.append(VolumeOutcome(volume_id, OK, "predicted"))
        except ModelLoadError:
            raise  # no volume of this shard can be predicted: the job fails, naming the model
        except Exception as exc:  # one volume's failure must not discard its shard-mates' results
            log.exception("volume %s (%s): pseudo-labeling for group %s failed", volume_id, volume_dir, group)
            report.outcomes.append(VolumeOutcome(volume_id, FAILED, _one_line(f"{type(exc).__name__}: {exc}")))
    if report_path is not None:
        write_report(report, report_path)
        marker.unlink(missing_ok=True)
    log.info("group %s: shard of %d volumes, %d predicted, %d failed, %d model load(s)", group,
             len(report.outcomes), report.predicted, len(report.failed), report.model_loads)
    return report


def load_predictor(model_dir: str | Path, fold: str, device: str, checkpoint_name: str = CHECKPOINT_NAME,
                   tile_step_size: float = 0.5, label_resampling: str = "probabilities"):
    """The trained model of one fold, loaded for inference; mirroring off (Online Methods 6.1).

    For CPU inference with `nearest` label resampling of a model whose trainer builds its network from the plans
    (as training recorded), a CpuPredictor (cadsflow.pseudolabel.cpu_predictor: the same network and weights,
    without importing nnU-Net's inference module or the trainer); otherwise an nnUNetPredictor.
    """
    model_dir = Path(model_dir)
    log.info("model load: %s fold %s checkpoint %s on %s, tile step %.2f", model_dir, fold, checkpoint_name, device,
             tile_step_size)
    try:
        trained = read_trained_fold(model_dir, fold, checkpoint_name)
        predictor = None
        if device == "cpu" and label_resampling == "nearest":
            from cadsflow.pseudolabel.cpu_predictor import cpu_predictor

            predictor = cpu_predictor(trained, tile_step_size)
        if predictor is None:
            predictor = _nnunet_predictor(trained, device, tile_step_size)
    except Exception as exc:
        raise ModelLoadError(f"{model_dir}: cannot load fold {fold} ({checkpoint_name}): "
                             f"{type(exc).__name__}: {exc}") from exc
    reader = predictor.plans_manager.image_reader_writer_class.__name__
    if reader not in SUPPORTED_READERS:
        raise ModelLoadError(f"{model_dir}: planned with image reader {reader}; pseudo-labeling feeds arrays in "
                             f"the axis order of {SUPPORTED_READERS}")
    return predictor


def _nnunet_predictor(trained: TrainedFold, device: str, tile_step_size: float):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=tile_step_size,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=device != "cpu",
        device=torch.device(device),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    initialize_predictor(predictor, trained)
    return predictor


def initialize_predictor(predictor, trained: TrainedFold) -> None:
    """nnUNetPredictor.initialize_from_trained_model_folder (nnunetv2 2.8.1) for one fold already read, with the
    checkpoint's trainer class found by cadsflow.specialists.nnunet.find_trainer_class, as training finds it: nnU-Net's
    own lookup imports every trainer module of its package before it reads nnUNet_extTrainer (0.8-1.2 s of every
    prediction job, measured); both return the same class."""
    predictor.manual_initialization(trained.network(trainer_network), trained.plans_manager,
                                    trained.configuration_manager, [trained.weights], trained.dataset_json,
                                    trained.trainer_name, trained.mirroring_axes)


def trainer_network(trained: TrainedFold):
    """The network as the checkpoint's trainer class builds it, deep supervision off; a trainer with the old
    build_network_architecture signature (architecture class, kwargs, imports) is called with that, as nnU-Net does."""
    import inspect

    from cadsflow.specialists.nnunet import find_trainer_class

    trainer_class = find_trainer_class(trained.trainer_name)
    configuration = trained.configuration_manager
    heads = trained.label_manager.num_segmentation_heads
    if "plans_manager" in inspect.signature(trainer_class.build_network_architecture).parameters:
        return trainer_class.build_network_architecture(trained.plans_manager, configuration,
                                                        trained.num_input_channels, heads,
                                                        enable_deep_supervision=False)
    log.warning("trainer %s uses nnU-Net's old build_network_architecture signature", trained.trainer_name)
    return trainer_class.build_network_architecture(
        configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import, trained.num_input_channels, heads,
        enable_deep_supervision=False)


def write_report(report: ShardReport, path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(REPORT_COLUMNS)
        for o in report.outcomes:
            writer.writerow([o.volume_id, o.status, o.reason])


def read_report(path: str | Path) -> list[VolumeOutcome]:
    with open(path, newline="") as handle:
        return [VolumeOutcome(r["volume_id"], r["status"], r["reason"])
                for r in csv.DictReader(handle, delimiter="\t")]


MAP_STATUSES = (OK, SKIPPED_NO_BRAIN)  # outcomes that leave a label map (a gated-out head volume: an empty one)
STATUS_COLUMNS = ("group", *REPORT_COLUMNS, "label_map")


def write_status_table(report_paths, out: str | Path) -> None:
    """One row per group and volume (group, volume_id, status, reason, label_map) from shard reports under <group>/;
    label_map is the map's path in the shard's folder beside its report (empty when the volume has none), so a
    user finds a volume's map in one step. A report that says a map exists where its folder has none is an error."""
    counts: dict[tuple[str, str], int] = {}
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(STATUS_COLUMNS)
        for path in sorted(map(Path, report_paths), key=lambda p: (p.parent.name, _shard_index(p))):
            group, maps = path.parent.name, MapIndex([job_folder(path)])
            for o in read_report(path):
                label_map = maps.get(o.volume_id) if o.status in MAP_STATUSES else None
                if o.status in MAP_STATUSES and label_map is None:
                    raise FileNotFoundError(f"{path}: volume {o.volume_id} is {o.status} but its label map is not in "
                                            f"{job_folder(path)}")
                writer.writerow([group, o.volume_id, o.status, o.reason, label_map or ""])
                counts[group, o.status] = counts.get((group, o.status), 0) + 1
    for (group, status), n in sorted(counts.items()):
        log.info("group %s: %d %s", group, n, status)


def read_label_maps(status_path: str | Path, root: str | Path = ".") -> dict[tuple[str, str], Path]:
    """(group, volume_id) -> label map from the status table's label_map column, its relative paths resolved against
    `root` (the run's working directory); a volume without a map is absent."""
    with open(status_path, newline="") as handle:
        return {(r["group"], r["volume_id"]): Path(root) / r["label_map"]
                for r in csv.DictReader(handle, delimiter="\t") if r["label_map"]}


def _shard_index(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[-1])


@dataclass
class _VolumeJob:
    volume_id: str
    image: Path
    out: Path
    fingerprint: str = ""
    gate: BrainGate | None = None  # head groups only
    vertebrae: np.ndarray | None = None  # group 558 without brain: group 552's map, which holds neck vertebrae
    brain_shape: tuple[int, ...] | None = None
    outcome: VolumeOutcome | None = None  # set when nothing is left to predict


def _plan_volume(volume_dir: Path, out_dir, group: int, shared: dict, brain_maps: MapIndex | None, resume: bool,
                 vertebrae_maps: MapIndex | None = None) -> _VolumeJob:
    """Decide what a volume needs: nothing (quarantined, kept from an interrupted run, or gated out) or a
    prediction; compute the fingerprint its label map will carry."""
    volume_id = volume_dir.name
    record = _read_record(volume_dir)
    job = _VolumeJob(volume_id, volume_dir / "image.nii.gz", label_map_path(out_dir, volume_id))
    if record.get("status") == "quarantined":
        job.outcome = VolumeOutcome(volume_id, QUARANTINED, _one_line(str(record.get("reason") or "quarantined")))
        return job
    if record.get("status") != "ok":
        raise ValueError(f"{volume_dir / 'record.json'}: status {record.get('status')!r}, expected ok or quarantined")
    parts = {**shared, "image": file_digest(job.image)}
    if is_head_group(group):
        brain_map = brain_maps.get(volume_id)
        if brain_map is None:
            expected = " or ".join(str(map_path(folder, volume_id)) for folder in brain_maps.folders)
            raise FileNotFoundError(f"{expected}: group 553 label map of volume {volume_id} is missing; "
                                    "head groups are gated and cropped by its brain")
        parts["brain"] = file_digest(brain_map)
        brain = read_volume(brain_map)
        job.gate = brain_gate(brain.data)
        job.brain_shape = brain.data.shape
        if group == HEAD_NECK_GROUP and not job.gate.passes and vertebrae_maps is not None:
            vertebrae_map = vertebrae_maps.get(volume_id)
            if vertebrae_map is not None:
                parts["vertebrae"] = file_digest(vertebrae_map)
                vertebrae = read_volume(vertebrae_map).data
                if neck_floor_slice(vertebrae) is not None:
                    job.vertebrae = vertebrae
        job.fingerprint = fingerprint(parts)
        if not job.gate.passes and job.vertebrae is None:
            if not (resume and stored_fingerprint(job.out) == job.fingerprint):
                save_label_map(np.zeros(brain.data.shape, dtype=np.uint8), brain.affine, job.out, job.fingerprint)
            job.outcome = VolumeOutcome(volume_id, SKIPPED_NO_BRAIN, job.gate.reason)
            return job
    job.fingerprint = fingerprint(parts)
    if resume and stored_fingerprint(job.out) == job.fingerprint:
        job.outcome = VolumeOutcome(volume_id, OK, "kept from the interrupted run (same fingerprint)")
    return job


def save_label_map(labels: np.ndarray, affine: np.ndarray, path: str | Path, fingerprint_hex: str) -> None:
    """A label map written atomically with its fingerprint in the NIfTI header (read back by stored_fingerprint):
    the pseudo-labels', the flavor predictions' and the assembled maps' one writer."""
    img = nib.Nifti1Image(labels, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = (FINGERPRINT_PREFIX + fingerprint_hex).encode()
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def predict_volume(predictor, volume, label_resampling: str = "probabilities") -> np.ndarray:
    """A group's raw label map (uint8, x, y, z) of a standardized volume (cadsflow.imageio.LoadedVolume).

    nnU-Net works on SimpleITK's (z, y, x) order with the spacing to match (see predict_single_npy_array's notes),
    so the volume goes in transposed and the labels come back transposed; pseudo-labeling and cads-predict share this.
    """
    data = np.ascontiguousarray(np.asarray(volume.data, dtype=np.float32).transpose(2, 1, 0))[None]
    spacing = [float(s) for s in volume.zooms[::-1]]
    segmentation = predict_array(predictor, data, spacing, label_resampling)
    labels = np.ascontiguousarray(np.asarray(segmentation).transpose(2, 1, 0)).astype(np.uint8)
    if labels.shape != volume.data.shape:
        raise ValueError(f"{volume.path}: prediction shape {labels.shape} differs from the image's {volume.data.shape}")
    return labels


def predict_array(predictor, data: np.ndarray, spacing, label_resampling: str = "probabilities") -> np.ndarray:
    """One image (channels, z, y, x in SimpleITK order, spacing to match) -> label map on the image's grid.

    `probabilities` is nnU-Net's own export: every class's logits are resampled to the image grid, then argmax.
    `nearest` takes the argmax on the model's grid and resamples the labels by nearest neighbour: one array instead
    of one per class (for a 60-class group about 60x less resampling work), at the price of label boundaries
    quantised to the model's spacing. Preprocessing, cropping and the sliding window are nnU-Net's in both.
    """
    if label_resampling == "probabilities":
        if not hasattr(predictor, "predict_single_npy_array"):
            raise ValueError("label_resampling 'probabilities' is nnU-Net's export: load the model with "
                             "load_predictor(..., label_resampling='probabilities')")
        return predictor.predict_single_npy_array(data, {"spacing": list(spacing)}, None, None, False)
    if label_resampling != "nearest":
        raise ValueError(f"label_resampling must be 'probabilities' or 'nearest', got {label_resampling!r}")
    import torch
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    plans = predictor.plans_manager
    model_input, properties = preprocess(predictor, data, spacing)
    logits = predict_logits(predictor, torch.from_numpy(model_input))
    on_model_grid = np.asarray(predictor.label_manager.convert_logits_to_segmentation(logits), dtype=np.uint8)
    cropped = nearest_resize(on_model_grid, properties["shape_after_cropping_and_before_resampling"])
    full = np.zeros(properties["shape_before_cropping"], dtype=np.uint8)
    full = insert_crop_into_image(full, cropped, properties["bbox_used_for_cropping"])
    return np.asarray(full).transpose(plans.transpose_backward)


def preprocess(predictor, data: np.ndarray, spacing) -> tuple[np.ndarray, dict]:
    """nnU-Net's preprocessing of one image for inference (channels, z, y, x; spacing to match): the model input and
    the properties that map its grid back to the image's (the configuration's preprocessor, run_case_npy)."""
    plans, configuration = predictor.plans_manager, predictor.configuration_manager
    model_input, _, properties = configuration.preprocessor_class(verbose=False).run_case_npy(
        data, None, {"spacing": list(spacing)}, plans, configuration, predictor.dataset_json)
    return model_input, properties


def predict_logits(predictor, model_input):
    """nnU-Net's predict_logits_from_preprocessed_data (half-precision logits of a preprocessed image), on the CPU.

    With one set of weights, no mirroring and a 3-D patch, nnU-Net's sliding window is computed here with its own
    arithmetic: the image zero-padded to at least one patch (pad_nd_image), tiles at compute_steps_for_sliding_window's
    steps in its order, each tile's float32 logits times its Gaussian accumulated in half precision and divided by the
    half-precision weight. An image that fits the patch (the smoke preset's specialists) is one tile. Skipped: its
    per-call weight reload, tile worker thread and queue. The network runs as cadsflow.pseudolabel.cpu_compile
    compiles it for the CPU, whose float32 logits differ from the eager network's in rounding only; the argmax can
    change where two classes' logits tie within that rounding. Any other case (several folds, mirroring, a GPU, a
    2-D patch) goes through nnU-Net unchanged.
    """
    import torch
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

    from cadsflow.pseudolabel.cpu_compile import tile_network

    patch = [int(p) for p in predictor.configuration_manager.patch_size]
    ours = (predictor.device.type == "cpu" and len(predictor.list_of_parameters) == 1
            and not predictor.use_mirroring and len(patch) == model_input.ndim - 1)
    if not ours:
        return predictor.predict_logits_from_preprocessed_data(model_input).cpu()
    from nnunetv2.configuration import default_num_processes

    threads = torch.get_num_threads()
    torch.set_num_threads(min(default_num_processes, threads))  # as nnU-Net's predict_logits_from_preprocessed_data
    try:
        network = tile_network(predictor, (model_input.shape[0], *patch))
        with torch.inference_mode():
            padded, unpad = pad_nd_image(model_input, patch, "constant", {"value": 0}, True, None)
            steps = compute_steps_for_sliding_window(padded.shape[1:], patch, predictor.tile_step_size)
            weight = 1  # nnU-Net's sliding window, as it calls compute_gaussian (cached there)
            if predictor.use_gaussian:
                weight = compute_gaussian(tuple(patch), sigma_scale=1.0 / 8, value_scaling_factor=10,
                                          device=torch.device("cpu"))
            summed = torch.zeros((predictor.label_manager.num_segmentation_heads, *padded.shape[1:]),
                                 dtype=torch.half)
            count = torch.zeros(padded.shape[1:], dtype=torch.half)
            for corner in itertools.product(*steps):  # nnU-Net's slicer order: first axis outermost
                tile = tuple(slice(c, c + p) for c, p in zip(corner, patch))
                logits = network(padded[(slice(None), *tile)][None].contiguous())[0]
                if predictor.use_gaussian:
                    logits *= weight  # nnU-Net: prediction *= gaussian (float32)
                summed[(slice(None), *tile)] += logits  # nnU-Net: predicted_logits (half) += prediction
                count[tile] += weight  # nnU-Net: n_predictions (half) += gaussian
            torch.div(summed, count, out=summed)
            if torch.any(torch.isinf(summed)):
                raise RuntimeError("inf in the predicted logits (nnU-Net's half-precision accumulation)")
            return summed[(slice(None), *unpad[1:])]
    finally:
        torch.set_num_threads(threads)


def nearest_resize(labels: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resampling of a label array to `shape`, voxel centres aligned (as the grids share corners)."""
    index = tuple(
        np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.intp), n_in - 1)
        for n_in, n_out in zip(labels.shape, shape)
    )
    return labels[np.ix_(*index)]


def _predict_volume(predictor, job: _VolumeJob, group: int, cleanup: CleanupRules,
                    label_resampling: str = "probabilities", image_transform: ImageTransform | None = None) -> None:
    volume = read_volume(job.image)  # (x, y, z), raises naming the file
    if image_transform is not None:
        volume = replace(volume, data=image_transform.apply(volume.data))
    if job.brain_shape is not None and job.brain_shape != volume.data.shape:
        raise ValueError(f"{job.image}: grid {volume.data.shape} differs from its group 553 label map's "
                         f"{job.brain_shape}; the brain box would be misplaced")
    labels = keep_largest_components(predict_volume(predictor, volume, label_resampling), cleanup)
    if group == HEAD_NECK_GROUP:
        labels, mode = refine_head_neck_labels(labels, job.gate, job.vertebrae)
        log.info("volume %s: group %s refined by %s", job.volume_id, group, mode)
    elif is_head_group(group):
        labels = refine_head_labels(group, labels, job.gate)
    save_label_map(labels, volume.affine, job.out, job.fingerprint)


def _read_record(volume_dir: Path) -> dict:
    path = volume_dir / "record.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the standardization record ({exc})") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
