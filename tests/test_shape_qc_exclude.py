"""Shape QC exclusion: per-image scores from constructed score tables with known answers, and the worst-fraction cut
(cadsflow.shape_qc.exclude)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cadsflow.shape_qc.exclude import (
    EXCLUSION_COLUMNS,
    exclusion_count,
    excluded,
    image_scores,
    write_exclusions,
)
from cadsflow.shape_qc.score_table import ABSENT, FAILED, MISSING_IN_PSEUDOLABEL, OK, SCORE_COLUMNS, WHOLE_VOLUME


def _table(hd: dict[str, dict[str, float]], status=None, extra_rows=()) -> pd.DataFrame:
    """Score table from {volume: {structure: hd90}} (status ok unless `status[(volume, structure)]` says)."""
    status = status or {}
    rows = [(v, s, value, status.get((v, s), OK), "") for v, by_structure in hd.items()
            for s, value in by_structure.items()]
    return pd.DataFrame(list(rows) + list(extra_rows), columns=list(SCORE_COLUMNS))


FIVE = _table({f"v{i}": {"s1": 2.0 * i, "s2": 10.0} for i in range(1, 6)})  # s1: 2, 4, 6, 8, 10; s2 constant


def test_mean_robust_z_is_the_mean_of_each_structures_positive_robust_z_scores():
    # s1: median 6, MAD 2 -> spread 1.4826 * 2 (above the 1.5 mm floor); s2: MAD 0 -> the floor, all at 0.
    images = image_scores(FIVE, "mean_robust_z", floor_mm=1.5).set_index("volume_id")
    spread = 1.4826 * 2.0
    expected = [0.0, 0.0, 0.0, (2.0 / spread) / 2, (4.0 / spread) / 2]
    assert images.loc[[f"v{i}" for i in range(1, 6)], "image_score"].tolist() == pytest.approx(expected)


def test_robust_z_divides_by_the_floor_when_a_structure_barely_varies():
    table = _table({f"v{i}": {"s1": value} for i, value in enumerate([3.0, 3.0, 3.0, 3.0, 6.0])})
    images = image_scores(table, "mean_robust_z", floor_mm=1.5).set_index("volume_id")
    assert images.loc["v4", "image_score"] == pytest.approx(3.0 / 1.5)


def test_mean_rank_is_the_mean_of_per_structure_percentile_ranks_with_ties_averaged():
    images = image_scores(FIVE, "mean_rank").set_index("volume_id")
    # s1 ranks 1..5 of 5; s2 all tied at rank 3 of 5
    expected = [(0.2 + 0.6) / 2, (0.4 + 0.6) / 2, (0.6 + 0.6) / 2, (0.8 + 0.6) / 2, (1.0 + 0.6) / 2]
    assert images.loc[[f"v{i}" for i in range(1, 6)], "image_score"].tolist() == pytest.approx(expected)


def test_one_catastrophic_structure_ranks_first_by_robust_z_but_not_by_mean_rank():
    # Twelve structures with small scatter; v0 has one structure 50 mm off, v1 is a little worse everywhere.
    hd = {f"v{i}": {f"s{j}": 2.0 + 0.1 * ((7 * i + 3 * j) % 10) for j in range(12)} for i in range(10)}
    hd["v0"]["s0"] = 50.0
    hd["v1"] = {s: value + 0.5 for s, value in hd["v1"].items()}
    table = _table(hd)
    by_z = image_scores(table, "mean_robust_z").sort_values("rank")
    by_rank = image_scores(table, "mean_rank").sort_values("rank")
    assert by_z["volume_id"].iloc[0] == "v0"
    assert by_rank["volume_id"].iloc[0] == "v1"


def test_a_missing_structure_scores_worse_than_any_distance():
    hd = {f"v{i}": {"s1": 2.0 + 0.1 * i, "s2": 3.0} for i in range(6)}
    hd["v3"]["s2"] = 400.0  # the image diagonal, as score.py writes it for a missing side
    images = image_scores(_table(hd, status={("v3", "s2"): MISSING_IN_PSEUDOLABEL}))
    worst = images.sort_values("rank").iloc[0]
    assert (worst["volume_id"], worst["worst_structure"], worst["worst_status"]) == ("v3", "s2",
                                                                                      MISSING_IN_PSEUDOLABEL)


@pytest.mark.parametrize("n, fraction, expected", [(20, 0.10, 2), (25, 0.10, 3), (24, 0.10, 2), (4, 0.10, 0),
                                                    (10, 0.0, 0), (10, 1.0, 10)])
def test_exclusion_count_is_the_nearest_whole_number_halves_up(n, fraction, expected):
    assert exclusion_count(n, fraction) == expected


def test_the_ten_percent_cut_excludes_exactly_the_two_worst_of_twenty_images():
    table = _table({f"v{i:02d}": {"s1": float(i)} for i in range(1, 21)})
    out = excluded(image_scores(table, "mean_rank", fraction=0.10))
    assert list(out.columns) == list(EXCLUSION_COLUMNS)
    assert list(out["volume_id"]) == ["v20", "v19"]
    assert list(out["rank"]) == [1, 2]
    assert "in the worst 10%" in out["reason"].iloc[0]


def test_failed_volumes_rank_first_and_are_excluded_even_beyond_the_quota():
    failed = [(v, WHOLE_VOLUME, np.nan, FAILED, f"{v}.nii.gz: cannot read") for v in ("bad1", "bad2")]
    table = _table({f"v{i}": {"s1": float(i)} for i in range(10)}, extra_rows=failed)
    images = image_scores(table, "mean_robust_z", fraction=0.10)  # 12 images: quota 1, but 2 failed
    out = excluded(images)
    assert sorted(out["volume_id"]) == ["bad1", "bad2"]
    assert math.isinf(out["image_score"].iloc[0])
    assert out["reason"].str.startswith("scoring failed: ").all()


def test_an_empty_pseudolabel_is_never_excluded_but_counts_toward_the_quota():
    empty = [("empty", WHOLE_VOLUME, np.nan, ABSENT, "empty pseudo-label")]
    table = _table({f"v{i:02d}": {"s1": float(i)} for i in range(14)}, extra_rows=empty)
    images = image_scores(table, "mean_rank", fraction=0.10).set_index("volume_id")  # 15 images: quota 2
    assert sorted(images.index[images["excluded"]]) == ["v12", "v13"]
    assert pd.isna(images.loc["empty", "rank"]) and images.loc["empty", "reason"] == "empty pseudo-label"


def test_ties_at_the_cut_are_broken_by_volume_id():
    table = _table({v: {"s1": 5.0} for v in ("c", "a", "b")} | {f"x{i}": {"s1": 1.0} for i in range(7)})
    out = excluded(image_scores(table, "mean_rank", fraction=0.10))  # 10 images: quota 1 among three tied
    assert list(out["volume_id"]) == ["a"]


def test_write_exclusions_reads_shard_tables_and_writes_the_exclusion_tsv(tmp_path):
    table = _table({f"v{i:02d}": {"s1": float(i)} for i in range(1, 21)})
    table.iloc[:10].to_csv(tmp_path / "s0.tsv", sep="\t", index=False)
    table.iloc[10:].to_csv(tmp_path / "s1.tsv", sep="\t", index=False)
    write_exclusions([tmp_path / "s0.tsv", tmp_path / "s1.tsv"], tmp_path / "excluded.tsv", 0.10, "mean_rank",
                     images_out=tmp_path / "images.tsv")
    written = pd.read_csv(tmp_path / "excluded.tsv", sep="\t")
    assert list(written.columns) == list(EXCLUSION_COLUMNS)
    assert list(written["volume_id"]) == ["v20", "v19"]
    assert len(pd.read_csv(tmp_path / "images.tsv", sep="\t")) == 20
