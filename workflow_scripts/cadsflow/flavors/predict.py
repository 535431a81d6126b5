"""Flavor predictions: one job predicts a list of volumes with several flavor models of one group, one load each.

Two rules run this (rules/flavor_predict.smk):
- flavor_validate: every flavor predicts the group's validation volumes (config flavors.validation_split); the
  ranking scores these predictions.
- flavor_predict: the flavors the priority table ranks first for some structure of the group
  (cadsflow.flavors.predict_plan.read_selected_flavors) predict the non-validation volumes of a few pseudo-label
  shards; the assembly reads them.

Each flavor's volumes go through cadsflow.pseudolabel.infer.predict_shard, the pseudo-labeling path: one model load,
the same post-processing (connected components per config pseudolabel.postprocessing), the head groups' brain gate
and crop from group 553's pseudo-labels (group 558: its neck fallback from group 552's), quarantined volumes
reported and not predicted, label maps in group label ids on the standardized grid, written atomically with a
fingerprint in the header. The one difference is the image: a flavor model was trained on images scaled from
their 5th to 95th percentile to [0, 1] (cadsflow.flavors.intensity), so each image is scaled the same way in
memory before prediction, and the scaling enters the fingerprint.

Layout (cadsflow.layout): a job's label maps go to its declared folder beside its report,
<out_root>/<flavor>/<volume_id>.nii.gz with out_root = results/flavors/predictions/<group>/validation or
.../<group>/part_<p>; the job creates that folder even when it writes no map. The head groups' brain (and neck)
maps are group 553's (552's) pseudo-labels of the same volumes, given as the folders of their shards.

Resume as in the pseudolabel stage: the job keeps a marker `<report>.running` while it runs; a job that finds the
marker an interrupted run left keeps every label map whose header carries the fingerprint of what it would be made
from now (model checkpoint, image, scaling, brain map, post-processing, settings) and predicts the rest. A job that
starts without that marker predicts everything (Snakemake decided it must run).

Report (TSV, one row per volume and flavor): volume_id, flavor, status, reason (statuses of predict_shard: ok,
failed, quarantined, skipped_no_brain).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cadsflow.atomic import atomic_path
from cadsflow.flavors.intensity import PERCENTILES, scale_percentiles
from cadsflow.flavors.predict_plan import REPORT_COLUMNS, FlavorOutcome, prediction_dir
from cadsflow.layout import MapFolders, MapIndex
from cadsflow.pseudolabel.infer import FAILED, ImageTransform, VolumeOutcome, predict_shard, running_marker
from cadsflow.pseudolabel.options import add_prediction_options, run_logged
from cadsflow.pseudolabel.postprocess import CleanupRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlavorModel:
    """One trained flavor model of a group: the nnU-Net model folder and fold its marker names."""

    flavor: str
    model_dir: Path
    fold: str


def predict_flavors(models: Sequence[FlavorModel], volume_dirs: Sequence[str | Path], out_root: str | Path,
                    group: int, report_path: str | Path, percentiles: tuple[float, float] = PERCENTILES,
                    device: str = "cpu", cleanup: CleanupRules | None = None, brain_dir: MapFolders | None = None,
                    vertebrae_dir: MapFolders | None = None, tile_step_size: float = 0.5,
                    label_resampling: str = "probabilities") -> list[FlavorOutcome]:
    """Predict the standardized volumes in `volume_dirs` with each model in turn (one load per model).

    Label maps: <out_root>/<flavor>/<volume_id>.nii.gz. Writes the report at `report_path` (module docstring).
    `brain_dir` / `vertebrae_dir`: one folder of group 553's (552's) maps or a list of folders (its shards').
    """
    if len({m.flavor for m in models}) != len(models):
        raise ValueError(f"group {group}: a flavor is given twice in {[m.flavor for m in models]}")
    marker = running_marker(report_path)
    resume = marker.is_file()
    if resume:
        log.info("%s: an interrupted run of this job left its marker; label maps that carry the current "
                 "fingerprint are kept", marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("running\n")
    Path(out_root).mkdir(parents=True, exist_ok=True)  # the declared folder exists even when no map is written
    brain_dir, vertebrae_dir = MapIndex.of(brain_dir), MapIndex.of(vertebrae_dir)  # listed once for every model
    transform = percentile_transform(percentiles)
    outcomes: list[FlavorOutcome] = []
    for model in models:
        report = predict_shard(model.model_dir, model.fold, volume_dirs, prediction_dir(out_root, model.flavor),
                               group, device=device, cleanup=cleanup, brain_dir=brain_dir, report_path=None,
                               tile_step_size=tile_step_size, label_resampling=label_resampling,
                               vertebrae_dir=vertebrae_dir, image_transform=transform, resume=resume)
        log.info("group %s flavor %s: %d volumes, %d predicted, %d failed, %d model load(s)", group, model.flavor,
                 len(report.outcomes), report.predicted, len(report.failed), report.model_loads)
        outcomes += [_with_flavor(o, model.flavor) for o in report.outcomes]
    write_report(outcomes, report_path)
    marker.unlink(missing_ok=True)
    return outcomes


def percentile_transform(percentiles: tuple[float, float] = PERCENTILES) -> ImageTransform:
    """The flavor models' input scaling (cadsflow.flavors.intensity.scale_percentiles) as predict_shard takes it."""
    low, high = (float(p) for p in percentiles)
    return ImageTransform(f"scale_percentiles({low:g},{high:g})", partial(scale_percentiles, percentiles=(low, high)))


def write_report(outcomes: Sequence[FlavorOutcome], path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(REPORT_COLUMNS)
        for o in outcomes:
            writer.writerow([o.volume_id, o.flavor, o.status, o.reason])


def main(argv=None) -> int:
    """python -m cadsflow.flavors.predict: predict volumes with a group's flavor models (a Snakemake shell rule)."""
    parser = argparse.ArgumentParser(prog="python -m cadsflow.flavors.predict", description=main.__doc__)
    parser.add_argument("--group", type=int, required=True, help="group (551-559)")
    parser.add_argument("--model", nargs="+", required=True, metavar="FLAVOR=MARKER",
                        help="flavor models: name=training marker (results/flavors/<flavor>/models/<group>.done)")
    parser.add_argument("--priority", help="priority table: predict only the flavors it ranks first for a "
                                           "structure of the group (default: every --model)")
    parser.add_argument("--volumes", nargs="*", default=[], help="standardized volume folders to predict")
    parser.add_argument("--out-root", required=True, help="the job's declared folder (beside its report): "
                                                          "<out-root>/<flavor>/<volume_id>.nii.gz")
    parser.add_argument("--report", required=True, help="report to write (TSV: volume_id, flavor, status, reason)")
    parser.add_argument("--flavors-config", help="config/flavors.yaml (flavor order; preset percentiles)")
    parser.add_argument("--flavor-preset", help="flavor preset whose intensity_percentiles scale the images")
    add_prediction_options(parser)
    args = parser.parse_args(argv)
    return run_logged(args, _run)


# -- helpers ---------------------------------------------------------------------------------------------------


def _run(args) -> int:
    from cadsflow.flavors.predict_plan import read_selected_flavors
    from cadsflow.flavors.settings import FLAVORS_YAML, load_flavor_names, load_flavor_preset
    from cadsflow.pseudolabel.postprocess import POSTPROCESSING_YAML, load_cleanup_rules
    from cadsflow.specialists.train import read_marker

    config = args.flavors_config or FLAVORS_YAML
    markers = _parse_models(args.model)
    chosen = list(markers)
    if args.priority:
        chosen = list(read_selected_flavors(args.priority, args.group, load_flavor_names(config)))
        missing = [f for f in chosen if f not in markers]
        if missing:
            raise SystemExit(f"{args.priority}: group {args.group} needs flavor(s) {', '.join(missing)}, "
                             f"but no --model names them")
        log.info("group %s: the priority table %s ranks %s first for at least one structure; predicting with "
                 "those only (not %s)", args.group, args.priority, ", ".join(chosen),
                 ", ".join(f for f in markers if f not in chosen) or "-")
    models = []
    for flavor in chosen:
        record = read_marker(markers[flavor])
        models.append(FlavorModel(flavor, Path(record["model_dir"]), str(record["fold"])))
    percentiles = load_flavor_preset(args.flavor_preset, config).intensity_percentiles if args.flavor_preset \
        else PERCENTILES
    cleanup = load_cleanup_rules(args.group, args.postprocessing or POSTPROCESSING_YAML)
    outcomes = predict_flavors(models, args.volumes, args.out_root, args.group, args.report, percentiles,
                               args.device, cleanup, args.brain_dir, args.vertebrae_dir, args.tile_step_size,
                               args.label_resampling)
    failed = [o for o in outcomes if o.status == FAILED]
    for o in failed:
        log.error("volume %s, flavor %s: failed: %s", o.volume_id, o.flavor, o.reason)
    return 1 if failed and args.fail_on_volume_error else 0


def _parse_models(items: Sequence[str]) -> dict[str, str]:
    models = {}
    for item in items:
        flavor, sep, marker = item.partition("=")
        if not sep or not flavor or not marker:
            raise SystemExit(f"--model {item!r}: expected FLAVOR=MARKER")
        if flavor in models:
            raise SystemExit(f"--model: flavor {flavor} given twice")
        models[flavor] = marker
    return models


def _with_flavor(outcome: VolumeOutcome, flavor: str) -> FlavorOutcome:
    return FlavorOutcome(outcome.volume_id, flavor, outcome.status, outcome.reason)


if __name__ == "__main__":
    sys.exit(main())
