"""Head-group training subsets of the final model (Online Methods 4.1) on constructed label-count tables with known
answers: 557 keeps volumes whose assembled 553 brain exceeds 2,000 voxels, 558 those with >= 24 of its structures."""

import numpy as np
import pandas as pd
import pytest
import yaml

from cadsflow.final.__main__ import main
from cadsflow.final.config import FINAL_YAML, FinalConfigError, HeadSubsetRule, head_subset_rules
from cadsflow.final.counts import write_count_table
from cadsflow.final.subsets import (
    SubsetError,
    training_subset,
    volumes_with_structures_present,
    volumes_with_voxels_above,
)
from cadsflow.labels import load_label_space

SPACE = load_label_space()
NAMES_553 = list(SPACE.group_label_map(553))
NAMES_558 = list(SPACE.group_label_map(558))  # 29 structures


def counts_553(brain_voxels: dict[str, int]) -> pd.DataFrame:
    table = pd.DataFrame(0, index=pd.Index(list(brain_voxels), name="volume_id"), columns=NAMES_553, dtype=np.int64)
    table["brain"] = pd.Series(brain_voxels)
    table["heart_myocardium"] = 50_000  # a large structure that must not count for the brain rule
    return table


def counts_558(present: dict[str, int]) -> pd.DataFrame:
    """Volume -> how many of 558's structures have voxels (the first n, 10 voxels each)."""
    table = pd.DataFrame(0, index=pd.Index(list(present), name="volume_id"), columns=NAMES_558, dtype=np.int64)
    for volume, n in present.items():
        table.loc[volume, NAMES_558[:n]] = 10
    return table


BRAIN = {"no_head": 0, "at_threshold": 2000, "just_above": 2001, "whole_head": 1_200_000}
PRESENT = {"neck_only": 5, "one_short": 23, "exactly_24": 24, "all_29": 29}


def test_brain_subset_keeps_volumes_exceeding_2000_brain_voxels_strictly():
    assert volumes_with_voxels_above(counts_553(BRAIN), "brain", 2000) == ["just_above", "whole_head"]


def test_head_neck_subset_keeps_volumes_with_at_least_24_structures_present():
    assert volumes_with_structures_present(counts_558(PRESENT), 24) == ["all_29", "exactly_24"]


def test_config_rules_carry_the_papers_constants():
    assert head_subset_rules() == {
        557: HeadSubsetRule(group=557, rule="brain_voxels_above", count_group=553, structure="brain", voxels=2000),
        558: HeadSubsetRule(group=558, rule="structures_present_at_least", count_group=558, structures=24),
    }


def test_557_subset_is_decided_on_the_553_counts_and_558_on_its_own():
    rules = head_subset_rules()
    tables = {553: counts_553(BRAIN), 558: counts_558(PRESENT)}
    assert training_subset(rules[557], tables) == ["just_above", "whole_head"]
    assert training_subset(rules[558], tables) == ["all_29", "exactly_24"]


def test_subset_without_the_count_table_it_needs_names_the_group():
    with pytest.raises(SubsetError, match="group 557.*group 553"):
        training_subset(head_subset_rules()[557], {558: counts_558(PRESENT)})


def test_subset_rule_with_an_unknown_key_is_rejected_naming_file_and_group(tmp_path):
    config = yaml.safe_load(FINAL_YAML.read_text())
    config["head_subsets"][558]["voxels"] = 5
    path = tmp_path / "final.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(FinalConfigError, match=r"final\.yaml: head_subsets\.558"):
        head_subset_rules(path)


def test_cli_subset_writes_the_qualifying_volume_ids(tmp_path):
    write_count_table(counts_553(BRAIN), tmp_path / "counts_553.tsv")
    out = tmp_path / "subset_557.txt"
    assert main(["subset", "--group", "557", "--counts", f"553={tmp_path / 'counts_553.tsv'}", "--out", str(out)]) == 0
    assert out.read_text() == "just_above\nwhole_head\n"
