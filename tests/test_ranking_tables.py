"""The ranking's files: score tables in, priority table and selection chart out, settings from config/flavors.yaml."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cadsflow.ranking.__main__ import main
from cadsflow.ranking.algorithm import RankingSettings
from cadsflow.ranking.figure import heatmap_data
from cadsflow.ranking.tables import load_ranking_settings, rank_scores, read_priority, read_scores

N = 12
NORMAL = stats.norm.ppf((np.arange(1, N + 1) - 0.5) / N)
SETTINGS = RankingSettings()


def write_scores(path, structures: dict[tuple[str, str, str], dict[str, np.ndarray]], status=None) -> str:
    """structures: (group, structure, split_kind) -> flavor -> Dice values; HD95 = 10 * (1 - Dice)."""
    rows = []
    for (group, structure, split), per_flavor in structures.items():
        for flavor, values in per_flavor.items():
            for i, v in enumerate(values):
                row = dict(structure=structure, group=group, flavor=flavor, volume_id=f"{split}{i:03d}",
                           split_kind=split, dice=v, hd95=10 * (1 - v))
                if status is not None:
                    row["status"] = status(i)
                rows.append(row)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return str(path)


def ordered(best: str, second: str, third: str) -> dict[str, np.ndarray]:
    return {best: 0.90 + 0.02 * NORMAL, second: 0.85 + 0.02 * NORMAL, third: 0.80 + 0.02 * NORMAL}


def test_priority_table_has_one_row_per_structure_with_order_and_trail(tmp_path):
    scores = write_scores(tmp_path / "scores.tsv", {
        ("551", "liver", "ID"): ordered("GT", "Pseudo", "Shape"),
        ("551", "liver", "OOD"): ordered("Shape", "GT", "Pseudo"),
        ("551", "spleen", "ID"): ordered("Pseudo", "Shape", "GT"),
    })
    out = tmp_path / "ranking" / "priority.tsv"
    rank_scores([scores], out, SETTINGS)
    table = read_priority(out)
    assert list(table["structure"]) == ["liver", "spleen"]
    liver, spleen = table.iloc[0], table.iloc[1]
    assert (liver["first"], liver["second"], liver["third"], liver["split_kind"]) == ("Shape", "GT", "Pseudo", "OOD")
    assert (spleen["first"], spleen["second"], spleen["third"], spleen["split_kind"]) == ("Pseudo", "Shape", "GT", "ID")
    assert (liver["n_GT"], liver["dice_test"], liver["dice_posthoc"]) == ("12", "anova", "tukey")
    assert float(liver["dice_p"]) == pytest.approx(stats.f_oneway(*ordered("Shape", "GT", "Pseudo").values()).pvalue,
                                                   rel=1e-5)
    assert liver["dice_significant"] == "GT>Pseudo;Shape>GT;Shape>Pseudo"
    assert (liver["hd95_consulted"], liver["hd95_decided"], liver["decided_by"]) == (
        "false", "false", "primary_significance")


def test_rows_whose_status_does_not_count_are_left_out(tmp_path):
    scores = write_scores(tmp_path / "scores.tsv", {("551", "liver", "ID"): ordered("GT", "Pseudo", "Shape")},
                          status=lambda i: "excluded_small" if i < 2 else "scored")
    table = read_scores([scores], SETTINGS)
    assert len(table) == 3 * (N - 2)


@pytest.mark.parametrize("column", ["flavor", "split_kind", "dice"])
def test_a_score_table_without_a_required_column_is_rejected_naming_file_and_column(tmp_path, column):
    path = write_scores(tmp_path / "scores.tsv", {("551", "liver", "ID"): ordered("GT", "Pseudo", "Shape")})
    pd.read_csv(path, sep="\t").drop(columns=column).to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=rf"scores\.tsv: score table lacks column\(s\) {column}"):
        read_scores([path], SETTINGS)


def test_unknown_flavor_names_are_rejected_naming_the_file(tmp_path):
    path = write_scores(tmp_path / "scores.tsv", {("551", "liver", "ID"): {"Gt": 0.9 + 0.02 * NORMAL}})
    with pytest.raises(ValueError, match=r"scores\.tsv: unknown flavor\(s\) Gt"):
        read_scores([path], SETTINGS)


def test_a_volume_scored_twice_for_the_same_structure_and_flavor_is_rejected(tmp_path):
    a = write_scores(tmp_path / "a.tsv", {("551", "liver", "ID"): ordered("GT", "Pseudo", "Shape")})
    b = write_scores(tmp_path / "b.tsv", {("551", "liver", "ID"): {"GT": 0.9 + 0.02 * NORMAL}})
    with pytest.raises(ValueError, match=r"a\.tsv, .*b\.tsv: volume ID000 is scored more than once for liver"):
        read_scores([a, b], SETTINGS)


def test_settings_come_from_config_flavors_yaml():
    settings = load_ranking_settings()
    assert settings == RankingSettings()


def test_an_unknown_settings_key_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "flavors.yaml"
    path.write_text("flavors: [GT, Pseudo, Shape]\nranking:\n  alpha: 0.05\n  aplha: 0.01\n")
    with pytest.raises(ValueError, match=r"flavors\.yaml: unknown key\(s\) in 'ranking': aplha"):
        load_ranking_settings(path)


def test_cli_writes_priority_and_a_chart_marking_each_structures_first_flavor(tmp_path):
    scores = write_scores(tmp_path / "scores.tsv", {
        ("551", "liver", "ID"): ordered("GT", "Pseudo", "Shape"),
        ("552", "heart", "ID"): ordered("Shape", "Pseudo", "GT"),
        ("552", "aorta", "ID"): {"GT": 0.80 + 0.02 * NORMAL, "Pseudo": 0.90 + 0.02 * NORMAL},
    })
    out, png = tmp_path / "priority.tsv", tmp_path / "selection.png"
    assert main(["--scores", scores, "--out", str(out), "--figure", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = heatmap_data(read_priority(out), SETTINGS)
    assert data.rows == ["551 / liver", "552 / aorta", "552 / heart"]
    assert data.chosen.tolist() == [0, 1, 2]  # GT, Pseudo, Shape columns
    assert data.places.tolist() == [[1, 2, 3], [2, 1, 3], [3, 2, 1]]
    assert np.isnan(data.values[1, 2]) and data.values[0, 0] == pytest.approx(0.90)
