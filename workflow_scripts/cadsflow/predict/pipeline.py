"""cads-predict's steps for one CT, each the factory's own code: validate, standardize, predict the groups in
dependency order with the factory's post-processing, restore every map onto the input's grid, then write the outputs.

1. validate (cadsflow.validate.load_checked_image): readable, 3-D, finite, positive spacing, HU-like intensities; a
   DICOM series must also say Modality CT. A refused input raises InputRefused with a one-line reason, before
   anything is written.
2. standardize (cadsflow.standardize.standardize_volume, into a private temporary folder): RAS, 1.5 mm, the
   affine reduced to scale/shear, and the record that restores label maps onto the input's grid.
3. predict (cadsflow.pseudolabel.infer.load_predictor / predict_volume on the standardized image, as the factory's
   pseudo-labeling does): groups in dependency order (cadsflow.predict.models.run_order: 553 first). Each map gets
   the connected-component clean-up of config/postprocessing.yaml; the head groups are gated and cropped by group
   553's brain (Online Methods 3.1), group 558 without a brain keeps the neck above group 552's upper vertebrae
   (the authors' inference; 552 is then predicted even when not asked for). A head group whose map the gate
   would empty is not run at all.
4. restore (cadsflow.standardize.restore_label): every requested group's map onto the input's exact grid.
5. outputs in OUT_DIR, each written atomically: `group_<G>.nii.gz` per requested group (group label ids),
   `combined.nii.gz` (global ids, cadsflow.predict.combine), optionally `segmentations.dcm` (DICOM input only),
   `statistics.json`, `preview.png`; `run.json` last (models, settings, head-gate outcome, timings, notes).

--fast (FAST_INFERENCE): nnU-Net's sliding window without overlap (tile step 1.0 instead of 0.5: about half the
windows for a large CT) and labels taken by argmax on the model's grid and resampled by nearest neighbour instead
of resampling every class's probabilities (cadsflow.pseudolabel.infer.predict_array `nearest`). The models are the
same; label boundaries get coarser (the model's spacing) and tile seams may show.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cadsflow.atomic import atomic_path, write_text
from cadsflow.imageio import LoadedVolume, read_volume, save_nifti
from cadsflow.labels import GROUP_IDS, LabelSpace, load_label_space
from cadsflow.predict.models import GroupModel, find_models, run_order
from cadsflow.pseudolabel.infer import load_predictor, predict_volume as predict_group_labels
from cadsflow.pseudolabel.postprocess import (
    BRAIN_GROUP,
    POSTPROCESSING_YAML,
    VERTEBRAE_GROUP,
    brain_gate,
    is_head_group,
    keep_largest_components,
    load_cleanup_rules,
    neck_floor_slice,
    refine_head_labels,
    refine_head_neck_labels,
)
from cadsflow.standardize import StandardizeSettings, restore_label, standardize_volume
from cadsflow.validate import IntensityRule, QuarantineError, load_checked_image

HEAD_NECK_GROUP = 558
BRAIN_BOX, NO_BRAIN = "brain_box", "no_brain"  # outcomes of group 557's gate (558 uses postprocess's HEAD_NECK_*)
LABEL_DTYPE = np.uint8  # group label ids are at most 29


@dataclass(frozen=True)
class InferenceMode:
    tile_step_size: float
    label_resampling: str


DEFAULT_INFERENCE = InferenceMode(0.5, "probabilities")  # nnU-Net's defaults, the paper preset's pseudo-labeling
FAST_INFERENCE = InferenceMode(1.0, "nearest")  # --fast (module docstring)
COMBINED_NAME, SEG_NAME, STATISTICS_NAME, PREVIEW_NAME, RUN_NAME = (
    "combined.nii.gz", "segmentations.dcm", "statistics.json", "preview.png", "run.json")
REPORT_COLUMNS = ("volume_id", "status", "reason", "seconds")
OK, REFUSED, FAILED = "ok", "refused", "failed"
log = logging.getLogger(__name__)


class InputRefused(ValueError):
    """The input is not a CT this tool can segment; `reason` is one line naming the problem."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = " ".join(str(reason).split())


@dataclass(frozen=True)
class PredictSettings:
    groups: tuple[int, ...] = GROUP_IDS
    device: str = "cpu"
    fast: bool = False
    dicom_seg: bool = False
    statistics: bool = False
    preview: bool = False
    standardize: StandardizeSettings = field(default_factory=StandardizeSettings)
    postprocessing: Path = POSTPROCESSING_YAML

    @property
    def inference(self) -> InferenceMode:
        return FAST_INFERENCE if self.fast else DEFAULT_INFERENCE


@dataclass
class StepTimes:
    """Seconds per step of one volume, in the order the steps ran."""

    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.monotonic() - started

    @property
    def total(self) -> float:
        return sum(self.steps.values())

    def line(self, name: str) -> str:
        parts = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in self.steps.items())
        return f"{name}: {self.total:.1f} s ({parts})"


@dataclass
class VolumeResult:
    out_dir: Path
    outputs: list[str]
    times: StepTimes
    notes: list[str]
    head: dict


class ModelCache:
    """The groups' models, each loaded once on first use (a batch loads every model once for all its volumes)."""

    def __init__(self, models: dict[int, GroupModel], settings: PredictSettings, space: LabelSpace | None = None):
        self.models = models
        self.settings = settings
        self.space = space or load_label_space()
        self._predictors: dict[int, object] = {}
        self._cleanup: dict[int, object] = {}

    @classmethod
    def from_dir(cls, models_dir: str | Path, settings: PredictSettings) -> ModelCache:
        """Find every model the settings' groups need (ModelNotFoundError names a missing group)."""
        space = load_label_space()
        return cls(find_models(models_dir, settings.groups, space), settings, space)

    def predictor(self, group: int, times: StepTimes):
        if group not in self._predictors:
            model = self.models[group]
            with times.step(f"load {group}"), contextlib.redirect_stdout(io.StringIO()) as printed:
                self._predictors[group] = load_predictor(model.model_dir, model.fold, self.settings.device,
                                                         model.checkpoint_name,
                                                         self.settings.inference.tile_step_size,
                                                         self.settings.inference.label_resampling)
            log.debug("nnU-Net loading group %s's model printed: %s", group, printed.getvalue())  # trainer lookup
        return self._predictors[group]

    def cleanup(self, group: int):
        if group not in self._cleanup:
            self._cleanup[group] = load_cleanup_rules(group, self.settings.postprocessing, self.space)
        return self._cleanup[group]


def predict_volume(input_path: str | Path, out_dir: str | Path, cache: ModelCache, name: str | None = None
                   ) -> VolumeResult:
    """Segment one CT (NIfTI file or DICOM series folder) into `out_dir`; InputRefused before anything is written
    when it is not a usable CT."""
    settings, input_path, out_dir = cache.settings, Path(input_path), Path(out_dir)
    times, notes = StepTimes(), []
    with times.step("validate"):
        volume, source_images = check_input(input_path, settings)
    with tempfile.TemporaryDirectory(prefix="cads-predict.") as work, times.step("standardize"):
        record = standardize_volume("input", str(input_path), "", Path(work) / "standardized",
                                    settings=settings.standardize)
        if record["status"] != "ok":
            raise InputRefused(input_path, record["reason"])
        image_std = read_volume(Path(work) / "standardized" / "image.nii.gz")
    geometry = record["geometry"]
    maps_std, head = predict_groups(image_std, cache, settings.groups, times)
    with times.step("restore"):
        maps = {g: restore_label(maps_std[g], geometry)[0].astype(LABEL_DTYPE) for g in settings.groups}
        affine = np.asarray(geometry["original_affine"])
    outputs = write_outputs(out_dir, maps, volume, affine, source_images, settings, cache.space, times, notes)
    for note in notes:
        log.info("%s: %s", input_path, note)
    run = {
        "input": str(input_path.resolve()), "groups": list(settings.groups),
        "models": {str(g): {"kind": m.kind, "marker": str(m.marker), "model_dir": str(m.model_dir), "fold": m.fold,
                            "checkpoint": m.checkpoint_name} for g, m in sorted(cache.models.items())},
        "inference": {"device": settings.device, "fast": settings.fast,
                      "tile_step_size": settings.inference.tile_step_size,
                      "label_resampling": settings.inference.label_resampling},
        "head": head, "outputs": outputs, "notes": notes,
        "seconds": {step: round(s, 3) for step, s in times.steps.items()},
    }
    write_text(out_dir / RUN_NAME, json.dumps(run, indent=1) + "\n")
    log.info(times.line(name or input_path.name))
    return VolumeResult(out_dir, [*outputs, RUN_NAME], times, notes, head)


def check_input(path: Path, settings: PredictSettings) -> tuple[LoadedVolume, list | None]:
    """The validated CT and, for a DICOM series, its headers (without pixels); InputRefused otherwise."""
    try:
        volume = load_checked_image(str(path), settings.standardize.intensity, settings.standardize.max_image_bytes)
    except QuarantineError as exc:
        raise InputRefused(path, exc.reason) from None
    if not path.is_dir():
        return volume, None
    from cadsflow.predict.dicomseg import DicomSegError, read_source_images

    try:
        source_images = read_source_images(path)
    except DicomSegError as exc:
        raise InputRefused(path, str(exc)) from None
    modalities = sorted({str(getattr(ds, "Modality", "")) for ds in source_images})
    if modalities != ["CT"]:
        raise InputRefused(path, f"DICOM Modality {'/'.join(modalities) or 'missing'}, expected CT")
    return volume, source_images


def predict_groups(image: LoadedVolume, cache: ModelCache, groups, times: StepTimes
                   ) -> tuple[dict[int, np.ndarray], dict]:
    """Label maps on the standardized grid for `groups` (plus the groups they depend on), in dependency order;
    and what the head gate decided."""
    maps: dict[int, np.ndarray] = {}
    head: dict = {}
    todo = set(groups) | ({BRAIN_GROUP} if any(is_head_group(g) for g in groups) else set())
    for group in run_order(todo):
        if group == HEAD_NECK_GROUP and needs_vertebrae(maps) and VERTEBRAE_GROUP not in maps:
            maps[VERTEBRAE_GROUP] = _predict_group(VERTEBRAE_GROUP, image, cache, times)
        if not needs_prediction(group, maps):
            maps[group] = np.zeros(image.data.shape, dtype=LABEL_DTYPE)
            refined, mode = refine_head(group, maps[group], maps)
        else:
            refined, mode = refine_head(group, _predict_group(group, image, cache, times), maps)
        maps[group] = refined
        if mode:
            gate = brain_gate(maps[BRAIN_GROUP], cache.space)
            head.update(brain_voxels=gate.voxels, brain_gate_passes=gate.passes)
            head[str(group)] = mode
    return maps, head


def needs_vertebrae(maps: dict[int, np.ndarray]) -> bool:
    """Group 558 needs group 552's map when group 553 found too little brain (the authors' neck fallback)."""
    return not brain_gate(maps[BRAIN_GROUP]).passes


def needs_prediction(group: int, maps: dict[int, np.ndarray]) -> bool:
    """False for a head group whose map the refinement would empty whatever the model predicts: 557 without
    enough brain; 558 without enough brain and without upper vertebrae in group 552's map."""
    if not is_head_group(group) or brain_gate(maps[BRAIN_GROUP]).passes:
        return True
    return group == HEAD_NECK_GROUP and VERTEBRAE_GROUP in maps and neck_floor_slice(maps[VERTEBRAE_GROUP]) is not None


def refine_head(group: int, labels: np.ndarray, maps: dict[int, np.ndarray]) -> tuple[np.ndarray, str]:
    """Online Methods 3.1 for a head group (and the authors' neck fallback for 558); other groups unchanged.
    Returns the refined map and which rule applied ("" for a non-head group)."""
    if not is_head_group(group):
        return labels, ""
    gate = brain_gate(maps[BRAIN_GROUP])
    if group == HEAD_NECK_GROUP:
        return refine_head_neck_labels(labels, gate, None if gate.passes else maps.get(VERTEBRAE_GROUP))
    return refine_head_labels(group, labels, gate), BRAIN_BOX if gate.passes else NO_BRAIN


def predict_standardized(predictor, image: LoadedVolume, label_resampling: str) -> np.ndarray:
    """A group's raw label map of a standardized image (x, y, z), exactly as the factory's pseudo-labeling makes it."""
    return predict_group_labels(predictor, image, label_resampling).astype(LABEL_DTYPE, copy=False)


def _predict_group(group: int, image: LoadedVolume, cache: ModelCache, times: StepTimes) -> np.ndarray:
    predictor = cache.predictor(group, times)
    with times.step(f"predict {group}"):
        labels = predict_standardized(predictor, image, cache.settings.inference.label_resampling)
        return keep_largest_components(labels, cache.cleanup(group), spacing=image.zooms)


def write_outputs(out_dir: Path, maps: dict[int, np.ndarray], volume: LoadedVolume, affine: np.ndarray,
                  source_images, settings: PredictSettings, space: LabelSpace, times: StepTimes,
                  notes: list[str]) -> list[str]:
    """The files of one prediction in `out_dir` (created here, after validation and prediction); their names."""
    from cadsflow.predict.combine import combine_groups

    with times.step("combine"):
        combined = combine_groups(maps, space)
    outputs = []
    with times.step("write"):
        for group, labels in sorted(maps.items()):
            save_nifti(labels, affine, out_dir / f"group_{group}.nii.gz")
            outputs.append(f"group_{group}.nii.gz")
        save_nifti(combined, affine, out_dir / COMBINED_NAME)
        outputs.append(COMBINED_NAME)
    if settings.dicom_seg:
        with times.step("dicom-seg"):
            outputs += _write_seg(out_dir, combined, affine, source_images, space, notes)
    if settings.statistics:
        from cadsflow.predict.statistics import structure_statistics, write_statistics

        with times.step("statistics"):
            write_statistics(structure_statistics(maps, volume.data, affine, space), out_dir / STATISTICS_NAME)
        outputs.append(STATISTICS_NAME)
    if settings.preview:
        from cadsflow.predict.preview import write_preview

        with times.step("preview"):
            write_preview(volume.data, combined, affine, out_dir / PREVIEW_NAME, title=Path(volume.path).name)
        outputs.append(PREVIEW_NAME)
    return outputs


def _write_seg(out_dir: Path, combined: np.ndarray, affine: np.ndarray, source_images, space, notes) -> list[str]:
    from cadsflow.predict.dicomseg import DicomSegError, write_dicom_seg

    if source_images is None:
        notes.append(f"{SEG_NAME} not written: the input is a NIfTI file, and a DICOM-SEG must reference the DICOM "
                     "series it segments; give the series folder as INPUT")
        return []
    try:
        write_dicom_seg(combined, affine, source_images, out_dir / SEG_NAME, space)
    except DicomSegError as exc:
        notes.append(f"{SEG_NAME} not written: {exc}")
        return []
    return [SEG_NAME]


# -- batches (the Snakemake rule) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchOutcome:
    volume_id: str
    status: str
    reason: str
    seconds: float


def predict_batch(volumes, out_root: str | Path, models_dir: str | Path, settings: PredictSettings,
                  report_path: str | Path) -> list[BatchOutcome]:
    """Segment each (volume_id, image) into <out_root>/<volume_id>/ with one load per model for the whole batch.

    A refused or failing volume is a line of the report (TSV: volume_id, status, reason, seconds), not a failed
    job: its batch-mates' outputs are kept. A missing model fails the job (ModelNotFoundError names the group).
    """
    cache = ModelCache.from_dir(models_dir, settings)
    Path(out_root).mkdir(parents=True, exist_ok=True)  # the job's output folder, even when every volume is refused
    outcomes = []
    for volume_id, image in volumes:
        started = time.monotonic()
        try:
            result = predict_volume(image, Path(out_root) / volume_id, cache, name=volume_id)
            outcomes.append(BatchOutcome(volume_id, OK, "; ".join(result.notes), result.times.total))
        except InputRefused as exc:
            log.warning("%s refused: %s", volume_id, exc)
            outcomes.append(BatchOutcome(volume_id, REFUSED, exc.reason, time.monotonic() - started))
        except Exception as exc:  # one volume's failure must not discard its batch-mates' outputs
            log.exception("%s (%s): prediction failed", volume_id, image)
            outcomes.append(BatchOutcome(volume_id, FAILED, " ".join(f"{type(exc).__name__}: {exc}".split()),
                                         time.monotonic() - started))
    with atomic_path(report_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(REPORT_COLUMNS)
        writer.writerows((o.volume_id, o.status, o.reason, f"{o.seconds:.1f}") for o in outcomes)
    return outcomes


def settings_from_config(cfg: dict, standardize_cfg: dict | None = None) -> PredictSettings:
    """PredictSettings from the workflow config's `predict` section (and `standardize` for what counts as a CT)."""
    from cadsflow.predict.models import parse_groups

    standardize = StandardizeSettings()
    if standardize_cfg:
        standardize = replace(standardize, spacing_mm=float(standardize_cfg["spacing_mm"]),
                              image_interpolation=standardize_cfg["image_interpolation"],
                              intensity=IntensityRule(**standardize_cfg["intensity"]))
    groups = cfg.get("groups") or ""
    return PredictSettings(
        groups=parse_groups(",".join(map(str, groups)) if isinstance(groups, list) else str(groups)),
        device=cfg.get("device") or "cpu", fast=bool(cfg.get("fast", False)),
        dicom_seg=bool(cfg.get("dicom_seg", False)), statistics=bool(cfg.get("statistics", True)),
        preview=bool(cfg.get("preview", True)), standardize=standardize,
        postprocessing=Path(cfg.get("postprocessing") or POSTPROCESSING_YAML),
    )
