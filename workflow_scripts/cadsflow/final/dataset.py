"""One group's final-model training data (Online Methods 4.1): training volumes, counts, oversampling table and
the nnU-Net raw dataset, from the assembled label maps.

What the rule final_dataset does before it plans (cadsflow.specialists.train.plan_specialist), in one process:
1. candidates: the group's non-test volumes (the rule lists them) whose standardized image and assembled map of
   the group exist; a volume without them (quarantined, not assembled) is left out with a log line;
2. label counts from the assembly's provenance tables (cadsflow.final.counts: no label map is read again), for the
   group and, for a head group, for the group its subset rule counts (557: brain of the 553 map);
3. the head groups' subsets (cadsflow.final.subsets; config/final.yaml head_subsets), every candidate otherwise;
4. the label-count table and the oversampling table (cadsflow.final.oversampling) of the training volumes;
5. the nnU-Net raw dataset Dataset<G>_<Name>/: the standardized CT linked as imagesTr/<volume_id>_0000.nii.gz,
   the assembled map linked as labelsTr/<volume_id>.nii.gz, dataset.json with the group's labels and no ignore
   label (the assembled maps are complete), cads_cases.tsv (case, volume id, source). The folder is built the way
   the gt stage builds its datasets (cadsflow.gt.nnunet_dataset): parts under a temporary folder, dataset.json last.
nnU-Net's case names are the volume ids, which is what the oversampling trainer looks its probabilities up by.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cadsflow.final.config import FINAL_YAML, empty_head_subset, head_subset_rules, oversampling_rule
from cadsflow.final.counts import label_count_table_from_provenance, write_count_table
from cadsflow.final.oversampling import oversampling_table, write_table
from cadsflow.final.subsets import training_subset
from cadsflow.gt.nnunet_dataset import FILE_ENDING, dataset_json, dataset_parts, link_or_copy, write_cases
from cadsflow.labels import LabelSpace, load_label_space

log = logging.getLogger(__name__)


class FinalDatasetError(ValueError):
    """A group's final training set cannot be built; the message names the group and the reason."""


@dataclass(frozen=True)
class FinalCandidate:
    """A non-test volume that may train the group's final model."""

    volume_id: str
    source: str
    image: str  # the standardized CT (results/standardized/<batch>/<volume_id>/image.nii.gz)
    label: str  # the assembled map of the group (results/assembled/<group>/<batch>/<volume_id>.nii.gz)


@dataclass(frozen=True)
class TrainingSet:
    group: int
    cases: tuple[FinalCandidate, ...]
    num_candidates: int  # candidates with an image and an assembled map, before the head subset


def prepare_training_data(group: int, candidates: Sequence[FinalCandidate], provenance_tables: Sequence[str | Path],
                          dataset_dir: str | Path, counts_out: str | Path, table_out: str | Path,
                          config_path: str | Path = FINAL_YAML, space: LabelSpace | None = None,
                          preset: str | None = None) -> TrainingSet:
    """Steps 1-5 of the module docstring: write the count table, the oversampling table and the raw dataset.
    `preset` selects its head-subset constants (config/final.yaml head_subsets_by_preset)."""
    space = space or load_label_space()
    training = select_training_set(group, candidates, provenance_tables, config_path, space, preset)
    ids = [c.volume_id for c in training.cases]
    counts = label_count_table_from_provenance(provenance_tables, group, ids, space)
    write_count_table(counts, counts_out)
    table = oversampling_table(group, counts, oversampling_rule(group, config_path, space), space)
    write_table(table, table_out)
    write_final_dataset(group, training.cases, dataset_dir, space)
    minority = [s.name for s in table.structures if s.minority]
    log.info("group %s: %d training volumes of %d candidates; minority classes %s", group, len(ids),
             training.num_candidates, minority)
    return training


def select_training_set(group: int, candidates: Sequence[FinalCandidate], provenance_tables: Sequence[str | Path],
                        config_path: str | Path = FINAL_YAML, space: LabelSpace | None = None,
                        preset: str | None = None) -> TrainingSet:
    """The candidates with an image and an assembled map; for a head group those its subset rule keeps."""
    space = space or load_label_space()
    available = [c for c in candidates if _usable(c, group)]
    # a volume whose assembled map of the group is empty teaches only background: it does not train (and a head
    # subset of such volumes would leave the oversampling no structure to weigh)
    own = label_count_table_from_provenance(provenance_tables, group, [c.volume_id for c in available], space)
    labelled = set(own.index[own.sum(axis=1) > 0])
    if len(labelled) < len(available):
        log.info("group %s: %d of %d candidates have an empty assembled map and do not train", group,
                 len(available) - len(labelled), len(available))
    available = [c for c in available if c.volume_id in labelled]
    rules = head_subset_rules(config_path, space, preset)
    if group in rules and available:
        rule = rules[group]
        counts = label_count_table_from_provenance(provenance_tables, rule.count_group,
                                                   [c.volume_id for c in available], space)
        kept = set(training_subset(rule, {rule.count_group: counts}))
        cases = [c for c in available if c.volume_id in kept]
        log.info("group %s: head subset (%s of group %s's assembled maps) keeps %d of %d volumes", group, rule.rule,
                 rule.count_group, len(cases), len(available))
        if not cases:
            problem = (f"group {group}: none of {len(available)} candidate volumes passes the head subset rule {rule} "
                       f"(config {config_path}: head_subsets.{group}, preset {preset})")
            if empty_head_subset(config_path) == "fail":
                raise FinalDatasetError(f"{problem}; nothing to train the final model on")
            log.warning("%s; training on all %d candidates instead (empty_head_subset: all_candidates)", problem,
                        len(available))
            cases = available
    else:
        cases = available
    if not cases:
        raise FinalDatasetError(f"group {group}: none of {len(candidates)} non-test volumes has a standardized "
                                "image and a non-empty assembled label map; nothing to train the final model on")
    return TrainingSet(group, tuple(sorted(cases, key=lambda c: c.volume_id)), len(available))


def write_final_dataset(group: int, cases: Sequence[FinalCandidate], dataset_dir: str | Path,
                        space: LabelSpace | None = None) -> dict:
    """The nnU-Net raw dataset of the training volumes (module docstring, step 5); return its dataset.json."""
    space = space or load_label_space()
    dataset_dir = Path(dataset_dir)
    if not cases:
        raise FinalDatasetError(f"{dataset_dir}: no training volumes for group {group}")
    with dataset_parts(dataset_dir) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for c in cases:
            link_or_copy(Path(c.image), tmp / "imagesTr" / f"{c.volume_id}_0000{FILE_ENDING}")
            link_or_copy(Path(c.label), tmp / "labelsTr" / f"{c.volume_id}{FILE_ENDING}")
        write_cases([(c.volume_id, c.volume_id, c.source, []) for c in cases], tmp / "cads_cases.tsv")
        spec = dataset_json(group, space, len(cases), with_ignore=False)
        (tmp / "dataset.json").write_text(json.dumps(spec, indent=1))
    return spec


def _usable(candidate: FinalCandidate, group: int) -> bool:
    missing = [what for what, path in (("standardized image", candidate.image), ("assembled map", candidate.label))
               if not Path(path).is_file()]
    if missing:
        log.info("group %s: volume %s left out: no %s (%s)", group, candidate.volume_id, " and no ".join(missing),
                 candidate.image if "standardized image" in missing else candidate.label)
    return not missing
