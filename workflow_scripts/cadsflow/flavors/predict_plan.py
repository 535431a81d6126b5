"""What the flavor prediction jobs cover: the volumes of a part, and the flavors the ranking selected.

Parse-time and job-time helpers without torch or the statistics packages (the lookups of rules/flavor_predict.smk
import this module; the prediction job reads the priority table with it).

- A part is `shards_per_job` consecutive pseudo-label shards (cadsflow.pseudolabel.shards.Shards, the pseudolabel
  stage's numbering), so 22,022 volumes in 111 shards of 200 make ceil(111 / 5) = 23 parts per group. A part
  predicts the members of its shards that are not validation volumes: those are predicted once, by every flavor,
  in the group's validation job.
- The flavors a part job predicts with are those the priority table (results/ranking/priority.tsv, column
  ``first``) ranks first for at least one structure of the group; the assembly takes each structure from its
  first flavor, so no other flavor's prediction of a non-validation volume is ever read.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from cadsflow.pseudolabel.shards import Shards

FIRST_COLUMN = "first"  # cadsflow.ranking.tables.ORDINALS[0]
REPORT_COLUMNS = ("volume_id", "flavor", "status", "reason")


@dataclass(frozen=True)
class FlavorOutcome:
    """One line of a flavor prediction report: what happened to one volume with one flavor."""

    volume_id: str
    flavor: str
    status: str
    reason: str = ""


def part_count(n_shards: int, shards_per_job: int) -> int:
    """Number of parts (jobs per group) for `n_shards` pseudo-label shards, `shards_per_job` shards each."""
    if shards_per_job < 1:
        raise ValueError(f"shards_per_job must be a positive integer, got {shards_per_job!r}")
    return -(-n_shards // shards_per_job)


def part_shards(part: int, n_shards: int, shards_per_job: int) -> list[int]:
    """The pseudo-label shard indices part `part` covers: [part * shards_per_job, ...) up to the last shard."""
    if not 0 <= part < part_count(n_shards, shards_per_job):
        raise IndexError(f"part {part} does not exist: {n_shards} shards make "
                         f"{part_count(n_shards, shards_per_job)} parts of {shards_per_job} shards")
    start = part * shards_per_job
    return list(range(start, min(start + shards_per_job, n_shards)))


def part_volumes(shards: Shards, part: int, shards_per_job: int, excluded: Collection[str] = ()) -> list[str]:
    """The volumes part `part` predicts: members of its shards (sorted ids) that are not in `excluded`."""
    skip = set(excluded)
    return [v for k in part_shards(part, len(shards), shards_per_job) for v in shards.members(k) if v not in skip]


def selected_flavors(priority_rows: Sequence[dict], group: int | str, flavors: Sequence[str]) -> tuple[str, ...]:
    """The flavors ranked first for at least one structure of `group`, in the configured flavor order.

    Raises when the table has no row of the group (the ranking covers every structure of every group) or names a
    flavor that is not configured.
    """
    firsts = {row[FIRST_COLUMN] for row in priority_rows if str(row["group"]) == str(group)}
    if not firsts:
        raise ValueError(f"priority table has no structure of group {group}")
    unknown = sorted(firsts - set(flavors))
    if unknown:
        raise ValueError(f"priority table ranks unknown flavor(s) {', '.join(unknown)} first for group {group} "
                         f"(configured: {', '.join(flavors)})")
    return tuple(f for f in flavors if f in firsts)


def read_selected_flavors(priority_path: str | Path, group: int | str, flavors: Sequence[str]) -> tuple[str, ...]:
    """selected_flavors of a priority table file; errors name the file."""
    try:
        with open(priority_path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError as exc:
        raise ValueError(f"{priority_path}: cannot read the priority table ({exc})") from None
    if rows and not {"group", FIRST_COLUMN} <= set(rows[0]):
        raise ValueError(f"{priority_path}: priority table lacks the columns group and {FIRST_COLUMN}")
    try:
        return selected_flavors(rows, group, flavors)
    except ValueError as exc:
        raise ValueError(f"{priority_path}: {exc}") from None


def prediction_dir(out_root: str | Path, flavor: str) -> Path:
    """A flavor's label maps in one prediction job's folder: <out_root>/<flavor>/ (out_root: the job's declared
    folder, results/flavors/predictions/<group>/validation or .../<group>/part_<p>)."""
    return Path(out_root) / flavor


def read_report(path: str | Path) -> list[FlavorOutcome]:
    """A flavor prediction report (TSV: volume_id, flavor, status, reason); errors name the file."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            rows = list(reader)
            header = reader.fieldnames or []
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the flavor prediction report ({exc})") from None
    if set(REPORT_COLUMNS) - set(header):
        raise ValueError(f"{path}: a flavor prediction report has the columns {', '.join(REPORT_COLUMNS)}")
    return [FlavorOutcome(r["volume_id"], r["flavor"], r["status"], r["reason"]) for r in rows]
