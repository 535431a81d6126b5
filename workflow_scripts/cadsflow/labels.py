"""The unified label space: 167 structures in 9 groups (551-559), loaded from config/structures.tsv.

The table is the single source of truth for names, global ids, per-group ids and SNOMED-CT codes.
Left/right stay SNOMED modifier codes on the structure (e.g. kidney_left = Kidney + Left), not extra entries.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cadsflow.paths import STRUCTURES_TSV

GROUP_IDS = tuple(range(551, 560))  # Online Methods 2.1: nine specialist groups
N_STRUCTURES = 167
REQUIRED_COLUMNS = ("group", "label_id_in_group", "global_id", "name", "display_name", "type_code")


class LabelSpaceError(ValueError):
    """The structure table is malformed."""


@dataclass(frozen=True)
class Structure:
    name: str
    display_name: str
    group: int
    label_id: int  # id inside its group's label map (1..n)
    global_id: int  # id in the whole-body label map (1..167)
    type_code: str
    type_meaning: str
    modifier_code: str  # SNOMED laterality modifier ('' if none)
    modifier_meaning: str


@dataclass(frozen=True)
class LabelSpace:
    structures: tuple[Structure, ...]

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(sorted({s.group for s in self.structures}))

    def by_name(self, name: str) -> Structure:
        try:
            return self._index()[name]
        except KeyError:
            raise KeyError(f"unknown structure {name!r}: not in the label space table") from None

    def group(self, group: int) -> tuple[Structure, ...]:
        members = tuple(s for s in self.structures if s.group == group)
        if not members:
            raise KeyError(f"unknown group {group}: expected one of {self.groups}")
        return members

    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.structures)

    def group_label_map(self, group: int) -> dict[str, int]:
        """name -> id inside the group's label map (what a group's nnU-Net dataset.json lists)."""
        return {s.name: s.label_id for s in self.group(group)}

    def _index(self) -> dict[str, Structure]:
        return {s.name: s for s in self.structures}


def load_label_space(path: str | Path = STRUCTURES_TSV) -> LabelSpace:
    """Read and validate the structure table; raise LabelSpaceError naming the file and row on any defect."""
    path = Path(path)
    return _load_cached(str(path.resolve()))


@lru_cache(maxsize=4)
def _load_cached(path: str) -> LabelSpace:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LabelSpaceError(f"{path}: missing columns {missing}")
        structures = tuple(_parse_row(path, line_no, row) for line_no, row in enumerate(reader, start=2))
    _check_consistency(path, structures)
    return LabelSpace(structures)


def _parse_row(path: str, line_no: int, row: dict[str, str]) -> Structure:
    try:
        return Structure(
            name=row["name"].strip(),
            display_name=row["display_name"].strip(),
            group=int(row["group"]),
            label_id=int(row["label_id_in_group"]),
            global_id=int(row["global_id"]),
            type_code=row["type_code"].strip(),
            type_meaning=(row.get("type_meaning") or "").strip(),
            modifier_code=(row.get("type_modifier_code") or "").strip(),
            modifier_meaning=(row.get("type_modifier_meaning") or "").strip(),
        )
    except (TypeError, ValueError) as exc:
        raise LabelSpaceError(f"{path}:{line_no}: cannot parse row {row!r}: {exc}") from None


def _check_consistency(path: str, structures: tuple[Structure, ...]) -> None:
    names = [s.name for s in structures]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LabelSpaceError(f"{path}: duplicate structure names {dupes}")
    gids = sorted(s.global_id for s in structures)
    if gids != list(range(1, len(structures) + 1)):
        raise LabelSpaceError(f"{path}: global ids must be 1..{len(structures)} without gaps")
    for group in sorted({s.group for s in structures}):
        if group not in GROUP_IDS:
            raise LabelSpaceError(f"{path}: group {group} is not one of {GROUP_IDS}")
        ids = sorted(s.label_id for s in structures if s.group == group)
        if ids != list(range(1, len(ids) + 1)):
            raise LabelSpaceError(f"{path}: group {group} label ids must be 1..{len(ids)} without gaps")
    if not all(s.type_code for s in structures):
        raise LabelSpaceError(f"{path}: every structure needs a SNOMED-CT type_code")
