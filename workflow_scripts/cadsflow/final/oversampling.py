"""Class-balanced sampling for the final CADS model (Online Methods 4.1), computed as the authors computed it.

The authors' script (murong-xu/CADS, cads/misc/sandbox/cads-dataset_prepare/count_structure_frequency.py):
1. occurrence of a structure: the number of the group's training volumes whose label map contains it;
2. frequency p = occurrence / the largest occurrence among the group's structures;
3. weight = round(1 / p) when p < threshold (0.16), else 1; Python's round, so a half goes to the even integer
   (1 / p = 6.5 -> 6);
4. an image's weight is the weight of the rarest minority structure it contains, 1 when it contains none; the
   authors test group 552's C1-C5 in a fixed order and take the first one present, which is the rarest-first order
   when their order is the frequency order; here the rarest is taken from the table itself, and as round(1 / p)
   never decreases as p falls, that is also the largest weight among the minority structures present;
5. the image's sampling probability is its weight divided by the sum of all image weights.
The minority classes' label ids go to the trainer with the probabilities (the authors' `minority_class_indices`),
which centres foreground patches on them (workflow_scripts/nnunet_trainers/cads_oversampling_trainers.py).

Two choices the script leaves open are made here: a structure that occurs in no training volume (the script divides
by zero) gets frequency 0 and weight 0, which no image can inherit since no image contains it; and which structures
are minority classes is config (config/final.yaml: an explicit list, every structure below the threshold, or none).

The table (one TSV per group) has two kinds of rows, one per structure and one per image:
    kind       name       label_id  occurrence  frequency  minority  weight  rarest  probability
    structure  <name>     <id>      <volumes>   <p>        yes|no    <w>
    image      <volume>                                              <w>     <name>  <probability>
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cadsflow.atomic import atomic_path
from cadsflow.final.config import BELOW_THRESHOLD, NO_MINORITY, OversamplingRule
from cadsflow.labels import LabelSpace, load_label_space

COLUMNS = ("kind", "name", "label_id", "occurrence", "frequency", "minority", "weight", "rarest", "probability")
STRUCTURE, IMAGE = "structure", "image"
YES, NO = "yes", "no"
PROBABILITY_TOLERANCE = 1e-9  # a read table's probabilities must sum to 1 within this
OVERSAMPLING_TABLE_ENV = "CADS_OVERSAMPLING_TABLE"  # the trainer reads the table's path from this variable


class OversamplingError(ValueError):
    """Weights cannot be computed, or a table is malformed; the message names the group or the file."""


@dataclass(frozen=True)
class StructureWeight:
    name: str
    label_id: int  # id in the group's label map
    occurrence: int  # training volumes containing the structure
    frequency: float  # occurrence / the group's largest occurrence
    minority: bool
    weight: int  # round(1 / frequency) below the threshold, else 1; 0 for a structure in no volume


@dataclass(frozen=True)
class ImageWeight:
    volume_id: str
    weight: int
    rarest: str | None  # the minority structure whose weight the image took; None: it contains none
    probability: float


@dataclass(frozen=True)
class OversamplingTable:
    group: int
    structures: tuple[StructureWeight, ...]
    images: tuple[ImageWeight, ...]

    @property
    def minority_label_ids(self) -> tuple[int, ...]:
        """The group label ids the trainer prefers when a patch is centred on foreground."""
        return tuple(s.label_id for s in self.structures if s.minority)

    def probabilities_for(self, identifiers: Sequence[str], where: str = "") -> np.ndarray:
        """Sampling probabilities aligned with `identifiers`, renormalised over them (a fold may hold a subset)."""
        by_id = {image.volume_id: image.probability for image in self.images}
        missing = [i for i in identifiers if i not in by_id]
        if missing:
            raise OversamplingError(f"{where or 'oversampling table'}: no probability for {len(missing)} training "
                                    f"case(s) of group {self.group}, e.g. {missing[:5]}; the table must list every "
                                    "training volume")
        values = np.array([by_id[i] for i in identifiers], dtype=float)
        if not values.sum() > 0:
            raise OversamplingError(f"{where or 'oversampling table'}: the training cases' probabilities sum to 0")
        return values / values.sum()


def oversampling_table(group: int, counts: pd.DataFrame, rule: OversamplingRule,
                       space: LabelSpace | None = None) -> OversamplingTable:
    """Weights and sampling probabilities of `group` from its training volumes' label-count table."""
    label_ids = (space or load_label_space()).group_label_map(group)
    if list(counts.columns) != list(label_ids):
        raise OversamplingError(f"group {group}: the label-count table's columns are not the group's structures")
    if counts.empty:
        raise OversamplingError(f"group {group}: no training volumes to compute oversampling weights from")
    present = counts > 0
    occurrence = {name: int(n) for name, n in present.sum(axis=0).items()}
    frequencies = structure_frequencies(occurrence, where=f"group {group}")
    weights = {name: class_weight(p, rule.threshold) for name, p in frequencies.items()}
    minority = minority_structures(frequencies, rule)
    structures = tuple(
        StructureWeight(name=name, label_id=label_ids[name], occurrence=occurrence[name], frequency=frequencies[name],
                        minority=name in minority, weight=weights[name])
        for name in label_ids
    )
    image_weights = {volume_id: image_weight((n for n in minority if row[n]), weights, frequencies)
                     for volume_id, row in present.iterrows()}
    probabilities = sampling_probabilities({v: w for v, (w, _) in image_weights.items()})
    images = tuple(ImageWeight(volume_id=str(v), weight=w, rarest=rarest, probability=probabilities[v])
                   for v, (w, rarest) in sorted(image_weights.items()))
    return OversamplingTable(group=group, structures=structures, images=images)


def structure_frequencies(occurrence: Mapping[str, int], where: str = "") -> dict[str, float]:
    """p = occurrence / the largest occurrence (the authors' normalisation by the group's most frequent structure)."""
    top = max(occurrence.values(), default=0)
    if top <= 0:
        raise OversamplingError(f"{where or 'occurrence table'}: no structure occurs in any training volume")
    return {name: n / top for name, n in occurrence.items()}


def class_weight(frequency: float, threshold: float) -> int:
    """round(1 / p) for a structure rarer than the threshold, 1 otherwise; 0 when it occurs nowhere (p = 0)."""
    if frequency <= 0:
        return 0
    if frequency < threshold:
        return round(1 / frequency)  # Python's round, as in the authors' script
    return 1


def minority_structures(frequencies: Mapping[str, float], rule: OversamplingRule) -> tuple[str, ...]:
    """The minority classes the rule chooses, in the order of `frequencies` (label-id order)."""
    if rule.minority == NO_MINORITY:
        return ()
    if rule.minority == BELOW_THRESHOLD:
        return tuple(name for name, p in frequencies.items() if 0 < p < rule.threshold)
    unknown = [name for name in rule.minority if name not in frequencies]
    if unknown:
        raise OversamplingError(f"minority classes {unknown} are not structures of the group")
    return tuple(name for name in frequencies if name in rule.minority)


def image_weight(present_minority: Iterable[str], weights: Mapping[str, int],
                 frequencies: Mapping[str, float]) -> tuple[int, str | None]:
    """The weight of the rarest minority structure present (ties: the first listed), and its name; (1, None) if none."""
    present = list(present_minority)
    if not present:
        return 1, None
    rarest = min(present, key=lambda name: frequencies[name])
    return weights[rarest], rarest


def sampling_probabilities(image_weights: Mapping[str, int]) -> dict[str, float]:
    """Each image's weight over the sum of all image weights."""
    total = sum(image_weights.values())
    if total <= 0:
        raise OversamplingError("image weights sum to 0: nothing to sample")
    return {volume_id: weight / total for volume_id, weight in image_weights.items()}


def write_table(table: OversamplingTable, path: str | Path) -> None:
    """Write the structure and image rows as one TSV, atomically (floats at full precision)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(("group", *COLUMNS))
        for s in table.structures:
            writer.writerow((table.group, STRUCTURE, s.name, s.label_id, s.occurrence, repr(s.frequency),
                             YES if s.minority else NO, s.weight, "", ""))
        for i in table.images:
            writer.writerow((table.group, IMAGE, i.volume_id, "", "", "", "", i.weight, i.rarest or "",
                             repr(i.probability)))


def read_table(path: str | Path) -> OversamplingTable:
    """Read a table written by write_table; raise OversamplingError naming the file and line on any defect."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
            header = tuple(rows[0].keys()) if rows else ()
    except OSError as exc:
        raise OversamplingError(f"{path}: cannot read the oversampling table ({exc})") from None
    if header != ("group", *COLUMNS):
        raise OversamplingError(f"{path}: not an oversampling table (expected columns {('group', *COLUMNS)})")
    groups = {row["group"] for row in rows}
    if len(groups) != 1:
        raise OversamplingError(f"{path}: expected the rows of one group, found groups {sorted(groups)}")
    structures, images = [], []
    for line, row in enumerate(rows, start=2):
        try:
            if row["kind"] == STRUCTURE:
                structures.append(_structure_row(row))
            elif row["kind"] == IMAGE:
                images.append(_image_row(row))
            else:
                raise ValueError(f"kind {row['kind']!r} is neither {STRUCTURE!r} nor {IMAGE!r}")
        except (TypeError, ValueError) as exc:
            raise OversamplingError(f"{path}:{line}: {exc}") from None
    table = OversamplingTable(group=int(groups.pop()), structures=tuple(structures), images=tuple(images))
    _check_read_table(table, path)
    return table


def _structure_row(row: dict[str, str]) -> StructureWeight:
    if row["minority"] not in (YES, NO):
        raise ValueError(f"minority must be {YES!r} or {NO!r}, got {row['minority']!r}")
    return StructureWeight(name=row["name"], label_id=int(row["label_id"]), occurrence=int(row["occurrence"]),
                           frequency=float(row["frequency"]), minority=row["minority"] == YES,
                           weight=int(row["weight"]))


def _image_row(row: dict[str, str]) -> ImageWeight:
    probability = float(row["probability"])
    if not math.isfinite(probability) or probability < 0:
        raise ValueError(f"probability must be a finite non-negative number, got {row['probability']!r}")
    return ImageWeight(volume_id=row["name"], weight=int(row["weight"]), rarest=row["rarest"] or None,
                       probability=probability)


def _check_read_table(table: OversamplingTable, path: Path) -> None:
    ids = [i.volume_id for i in table.images]
    if not ids:
        raise OversamplingError(f"{path}: no image rows")
    if len(set(ids)) != len(ids):
        raise OversamplingError(f"{path}: an image is listed twice")
    total = sum(i.probability for i in table.images)
    if abs(total - 1) > PROBABILITY_TOLERANCE:
        raise OversamplingError(f"{path}: image probabilities sum to {total}, not 1")
