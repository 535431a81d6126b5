"""Which sources train which group's specialist (Online Methods 2.1), read from config/group_training.yaml,
one preset per config preset (config["preset"]: smoke = the demo cohort, paper = the CADS collection).

    groups:                                  # one entry per group: dataset name and where its labels come from
      551: {name: Organs, labels_from: source}
      557: {name: Brain, labels_from: atlas} # labels by atlas registration (the listed sources' head CTs)
    presets:
      paper:
        551: [totalsegmentator]
        556: [visceral_gold_corpus]          # its group-556 labels come from the source's extra OAR label set
      smoke:
        551: [demo_totalseg]

The nnU-Net dataset of group G is Dataset<G>_<name>. A group a preset does not list has no training sources
(and no dataset). A volume's group map combines all of its source's label sets (mapping.label_sets), so listing the
source is enough. Source names are checked against the registry/sheet by `check_known_sources`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


from cadsflow.labels import GROUP_IDS
from cadsflow.textio import read_yaml_mapping

LABELS_FROM = ("source", "atlas")
DATASET_NAME_RE = re.compile(r"[A-Za-z0-9]+")


class TrainingConfigError(ValueError):
    """config/group_training.yaml is malformed; the message names the file, the group and the problem."""


@dataclass(frozen=True)
class GroupTraining:
    group: int
    name: str
    labels_from: str  # "source": the sources' own labels; "atlas": registered atlas labels on their images
    sources: tuple[str, ...]

    @property
    def dataset_name(self) -> str:
        return f"Dataset{self.group}_{self.name}"


def load_group_training(path: str | Path, preset: str) -> dict[int, GroupTraining]:
    """Read the group table and one preset; return GroupTraining for all nine groups."""
    path = Path(path)
    data = read_yaml_mapping(path, "the group training table", TrainingConfigError)
    groups = data.get("groups") or {}
    presets = data.get("presets") or {}
    if preset not in presets:
        raise TrainingConfigError(f"{path}: preset {preset!r} not found; presets are {sorted(presets)}")
    chosen = presets[preset] or {}
    unknown = sorted(set(int(g) for g in chosen) - set(GROUP_IDS))
    if unknown:
        raise TrainingConfigError(f"{path}: preset {preset!r} lists groups {unknown}, not among {GROUP_IDS}")
    out = {}
    for group in GROUP_IDS:
        where = f"{path}: group {group}: "
        entry = groups.get(group) or groups.get(str(group))
        if not entry:
            raise TrainingConfigError(f"{where}missing from 'groups'")
        name = str(entry.get("name", ""))
        if not DATASET_NAME_RE.fullmatch(name):
            raise TrainingConfigError(f"{where}dataset name {name!r} must be letters and digits only")
        labels_from = str(entry.get("labels_from", "source"))
        if labels_from not in LABELS_FROM:
            raise TrainingConfigError(f"{where}labels_from must be one of {LABELS_FROM}, not {labels_from!r}")
        raw = chosen.get(group, chosen.get(str(group))) or []
        if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
            raise TrainingConfigError(f"{where}preset {preset!r}: expected a list of source names, got {raw!r}")
        sources = tuple(dict.fromkeys(raw))
        out[group] = GroupTraining(group, name, labels_from, sources)
    return out


def atlas_sources(training: dict[int, GroupTraining]) -> frozenset[str]:
    """Sources whose volumes get registered atlas labels (those training an atlas group)."""
    return frozenset(s for t in training.values() if t.labels_from == "atlas" for s in t.sources)


def check_known_sources(training: dict[int, GroupTraining], known: set[str], where: str = "") -> None:
    missing = {s: g for g, t in training.items() for s in t.sources if s not in known}
    if missing:
        listing = ", ".join(f"{s} (group {g})" for s, g in sorted(missing.items()))
        raise TrainingConfigError(
            f"{where}group training sources not in the registry or sheet: {listing}; known sources: {sorted(known)}"
        )



def training_volume_ids(training: GroupTraining, volumes: dict) -> list[str]:
    """Volumes that train a group: train_gt volumes of its sources; for an atlas group also their unlabelled
    training volumes (registration needs only the CT). Test volumes never train."""
    splits = ("train_gt", "train_unlabelled") if training.labels_from == "atlas" else ("train_gt",)
    return [vid for vid, v in volumes.items() if v.source in training.sources and v.split in splits]


def gt_volume_ids(volumes: dict, atlas_source_names: frozenset[str]) -> list[str]:
    """Volumes that get a results/gt/{volume_id}/ folder: those with labels, and every volume of an atlas source."""
    return [vid for vid, v in volumes.items() if v.has_label or v.source in atlas_source_names]
