"""The shape-QC score table: its columns, its row statuses (cadsflow.shape_qc.score says what each means) and its
reader and writer. Without torch: the exclusion job reads and writes tables only, and starts faster without it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cadsflow.atomic import atomic_path

SCORE_COLUMNS = ("volume_id", "structure", "hd90_mm", "status", "reason")
OK = "ok"
MISSING_IN_PSEUDOLABEL = "missing_in_pseudolabel"
MISSING_IN_RECONSTRUCTION = "missing_in_reconstruction"
ABSENT = "absent"
FAILED = "failed"
STATUSES = (OK, MISSING_IN_PSEUDOLABEL, MISSING_IN_RECONSTRUCTION, ABSENT, FAILED)
SCORED_STATUSES = (OK, MISSING_IN_PSEUDOLABEL, MISSING_IN_RECONSTRUCTION)  # rows that carry a finite hd90_mm
WHOLE_VOLUME = "*"  # the structure name of a row about the whole volume


def write_scores(table: pd.DataFrame, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f", na_rep="")


def read_scores(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate score tables (one per shard); ValueError naming a file without the expected columns."""
    tables = []
    for path in paths:
        table = pd.read_csv(path, sep="\t", dtype={"volume_id": str, "structure": str, "status": str,
                                                   "reason": str}, keep_default_na=False, na_values={"hd90_mm": [""]})
        if list(table.columns) != list(SCORE_COLUMNS):
            raise ValueError(f"{path}: expected columns {list(SCORE_COLUMNS)}, got {list(table.columns)}")
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=list(SCORE_COLUMNS))
    return pd.concat(tables, ignore_index=True)
