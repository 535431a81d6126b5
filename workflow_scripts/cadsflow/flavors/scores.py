"""Validation scores of a group's flavors: each flavor's prediction of each validation volume against its reference.

The ranking (cadsflow.ranking, Algorithm 1) compares the flavors per structure on Dice and HD95 of held-out
labelled volumes (Online Methods 2.4). The scoring is the evaluation engine's (cadsflow.evaluation.evaluate):
the reference is the volume's standardized label map (and the further label files its source carries), read
through its source's dataset alignment (classes, merged structures, annotated slices, excluded cases), and the
false-negative rule (config evaluation.false_negative_rule) sets each score's status. Only the classes whose
predicted structures all belong to the group are scored: a flavor model predicts one group.

Rows are per structure, flavor and volume. A class of several structures (e.g. a source that annotates both
kidneys as one label) gives its score to each of its structures: that is the evidence the volume holds about each.
A structure scored from a volume's main label map is not scored again from a further label set of the same volume
(one row per structure, flavor and volume, as the ranking requires).

split_kind (Online Methods 2.4, Step 1): ``ID`` when the volume's source is one of the group's training sources
(config/group_training.yaml: held-out volumes of the data its models learned from), ``OOD`` otherwise.

Columns: structure, group, flavor, volume_id, split_kind, dice, hd95, status (the evaluation's: only scored and
false_negative enter the ranking), source (the alignment key, "<source>:<set>" for a further label set), class
(the evaluation class the score belongs to).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cadsflow.atomic import atomic_path
from cadsflow.evaluation.alignment import load_alignment, resolve_alignment
from cadsflow.evaluation.evaluate import (
    EvaluationInputError,
    PredictionLayers,
    evaluate_volume,
    format_value,
    label_set_references,
)
from cadsflow.evaluation.metrics import NSD_TOLERANCE_MM, integer_labels
from cadsflow.evaluation.volumes import DEFAULT_FALSE_NEGATIVE_RULE, load_reference_volumes
from cadsflow.labels import LabelSpace, load_label_space

ID, OOD = "ID", "OOD"  # Online Methods 2.4: in-distribution (training sources) and out-of-distribution volumes
SCORE_COLUMNS = ("structure", "group", "flavor", "volume_id", "split_kind", "dice", "hd95", "status", "source",
                 "class")
PREDICTED_STATUSES = ("ok", "skipped_no_brain")  # report statuses whose label map exists (a gated-out head: empty)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationVolume:
    """A labelled validation volume: its id, source (alignment key) and reference (standardized folder or map)."""

    volume_id: str
    source: str
    reference: str


def split_kind(source: str, training_sources: Collection[str]) -> str:
    """ID when the volume comes from one of the group's training sources, else OOD."""
    return ID if source in training_sources else OOD


def score_flavors(volumes: Sequence[ValidationVolume], group: int, predictions: Mapping[str, Mapping[str, str]],
                  training_sources: Collection[str], out: str | Path, alignment_path: str | Path,
                  registry_path: str | Path | None = None, reference_volumes_path: str | Path | None = None,
                  label_space_path: str | Path | None = None,
                  false_negative_rule: str = DEFAULT_FALSE_NEGATIVE_RULE,
                  tolerance_mm: float = NSD_TOLERANCE_MM) -> list[dict]:
    """Score every flavor's prediction of every volume; write the table `out` (columns: module docstring).

    `predictions`: flavor -> volume_id -> label map in the group's label ids (a volume a flavor has no map of is
    left out for that flavor, and the log says so). A volume without a reference label map (quarantined) adds no
    rows.
    """
    space = load_label_space(label_space_path) if label_space_path else load_label_space()
    config = load_alignment(alignment_path)
    registry = _registry(registry_path, space)
    table = load_reference_volumes(reference_volumes_path) if reference_volumes_path else {}
    members = {s.name for s in space.group(group)}
    reader = group_map_reader(group, space)
    rows: list[dict] = []
    for item in volumes:
        references = label_set_references(item.reference, item.source, registry, space)
        if references is None:
            log.warning("%s: no standardized label map in %s (quarantined?): not scored", item.volume_id,
                        item.reference)
            continue
        maps = {f: by_volume[item.volume_id] for f, by_volume in predictions.items() if item.volume_id in by_volume}
        for flavor in (f for f in predictions if f not in maps):
            log.warning("%s: no prediction of flavor %s: not scored for it", item.volume_id, flavor)
        if not maps:
            continue
        kind = split_kind(item.source, training_sources)
        scored: set[str] = set()
        for dataset, reference in references:
            alignment = resolve_alignment(dataset, config, registry, space).restricted_to(members)
            alignment = replace(alignment, classes=tuple(c for c in alignment.classes
                                                         if not set(c.prediction_structures) & scored))
            if not alignment.classes:
                continue
            structures_of = {c.name: c.prediction_structures for c in alignment.classes}
            results = evaluate_volume(item.volume_id, dataset, reference, maps, alignment, table, None, tolerance_mm,
                                      space, {f: reader for f in maps}, false_negative_rule)
            for r in results:
                rows += [_row(r, structure, group, kind) for structure in structures_of[r["structure"]]]
            scored |= {s for names in structures_of.values() for s in names}
            log.info("%s (%s, %s): %d classes x %d flavors", item.volume_id, dataset, kind, len(structures_of),
                     len(maps))
    write_scores(rows, out)
    return rows


def group_map_reader(group: int, space: LabelSpace):
    """A reader for evaluate_volume: a label map in `group`'s label ids -> one layer in global ids."""
    structures = space.group(group)
    lookup = np.zeros(max(s.label_id for s in structures) + 1, dtype=np.int32)
    for s in structures:
        lookup[s.label_id] = s.global_id

    def read(path: str) -> PredictionLayers:
        import nibabel as nib

        try:
            img = nib.load(path)
            data = integer_labels(np.asanyarray(img.dataobj))
        except Exception as exc:
            raise EvaluationInputError(f"{path}: cannot read as a label map ({type(exc).__name__}: {exc})") from exc
        if data.size and (data.min() < 0 or data.max() >= len(lookup)):
            raise EvaluationInputError(f"{path}: label values {int(data.min())}..{int(data.max())} outside group "
                                       f"{group}'s ids 0..{len(lookup) - 1}")
        return PredictionLayers({None: (lookup[data], np.asarray(img.affine, dtype=float), path)},
                                lambda structure: None)

    return read


def predictions_from_reports(reports: Mapping[str, str | Path], prediction_root: str | Path) -> dict[str, dict]:
    """flavor -> volume_id -> label map path, for the volumes a validation report says have a map
    (<prediction_root>/<flavor>/<volume_id>.nii.gz; prediction_root: the validation job's folder)."""
    from cadsflow.flavors.predict_plan import prediction_dir, read_report
    from cadsflow.layout import map_path

    out: dict[str, dict[str, str]] = {}
    for report in reports.values():
        for o in read_report(report):
            if o.status in PREDICTED_STATUSES:
                folder = prediction_dir(prediction_root, o.flavor)
                out.setdefault(o.flavor, {})[o.volume_id] = str(map_path(folder, o.volume_id))
    return out


def write_scores(rows: Sequence[dict], path: str | Path) -> None:
    """The score table, atomically: floats with 6 decimals, NaN empty, infinity as inf."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SCORE_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format_value(row[k]) for k in SCORE_COLUMNS})


def main(argv=None) -> int:
    """python -m cadsflow.flavors.scores: score a group's flavor validation predictions (rule flavor_scores)."""
    parser = argparse.ArgumentParser(prog="python -m cadsflow.flavors.scores", description=main.__doc__)
    parser.add_argument("--group", type=int, required=True)
    parser.add_argument("--report", required=True, help="the group's validation report (flavor_validate)")
    parser.add_argument("--prediction-root", required=True,
                        help="the validation job's folder of maps: results/flavors/predictions/<group>/validation "
                             "(<flavor>/<volume_id>.nii.gz)")
    parser.add_argument("--volume", nargs=3, action="append", default=[], metavar=("VOLUME_ID", "SOURCE", "REF"),
                        help="a validation volume: id, source and reference (standardized folder or label map)")
    parser.add_argument("--training-sources", nargs="*", default=[], help="the group's training sources (ID)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--alignment", required=True)
    parser.add_argument("--registry")
    parser.add_argument("--reference-volumes")
    parser.add_argument("--label-space")
    parser.add_argument("--false-negative-rule", default=DEFAULT_FALSE_NEGATIVE_RULE)
    parser.add_argument("--tolerance-mm", type=float, default=NSD_TOLERANCE_MM)
    parser.add_argument("--log")
    args = parser.parse_args(argv)

    from cadsflow.logs import to_log_if

    with to_log_if(args.log):
        if not args.log:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        predictions = predictions_from_reports({"validation": args.report}, args.prediction_root)
        rows = score_flavors([ValidationVolume(*v) for v in args.volume], args.group, predictions,
                             set(args.training_sources), args.out, args.alignment, args.registry or None,
                             args.reference_volumes or None, args.label_space or None, args.false_negative_rule,
                             args.tolerance_mm)
        log.info("group %s: %d score rows -> %s", args.group, len(rows), args.out)
    return 0


# -- helpers ---------------------------------------------------------------------------------------------------


def _row(result: Mapping, structure: str, group: int, kind: str) -> dict:
    return {"structure": structure, "group": group, "flavor": result["system"], "volume_id": result["volume_id"],
            "split_kind": kind, "dice": result["dice"], "hd95": result["hd95"], "status": result["status"],
            "source": result["source"], "class": result["structure"]}


def _registry(path, space: LabelSpace):
    if not path:
        return None
    from cadsflow.sources import load_registry

    return load_registry(path, space)


if __name__ == "__main__":
    sys.exit(main())
