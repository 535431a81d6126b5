"""The progressive merge (Online Methods 2.5, 5.2) on constructed label maps whose right answer is written out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cadsflow.assembly.blocks import Block
from cadsflow.assembly.merge import (
    PriorityRow,
    assemble,
    choose_block_flavor,
    merge_order,
    missing_structures,
    read_gt_shares,
    read_priority,
)
from cadsflow.assembly.provenance import GROUND_TRUTH

IDS = {"a": 1, "b": 2, "c": 3, "v1": 4, "v2": 5, "v3": 6}
FLAVORS = ("GT", "Pseudo", "Shape")
SPINE = Block("spine", 900, ("v1", "v2", "v3"))


def row(structure, first, dice, share=0.0, group=900):
    return PriorityRow(structure, group, first, "", "", dice, share)


def line(*values) -> np.ndarray:
    """A 1 x 1 x n label map (one row of voxels), so expected maps can be written as lists."""
    return np.array(values, dtype=np.uint8).reshape(1, 1, -1)


def merge(maps, priority, gt=None, gt_structures=(), blocks=()):
    return assemble(maps, priority, gt, gt_structures, blocks, label_ids=IDS, flavor_order=FLAVORS)


def test_higher_dice_structure_wins_the_voxels_it_shares_with_a_lower_dice_one():
    maps = {"GT": line(1, 1, 0, 0), "Pseudo": line(0, 2, 2, 0)}
    labels, _ = merge(maps, [row("a", "GT", 0.9), row("b", "Pseudo", 0.7)])
    assert labels.ravel().tolist() == [1, 1, 2, 0]
    labels, _ = merge(maps, [row("a", "GT", 0.6), row("b", "Pseudo", 0.7)])
    assert labels.ravel().tolist() == [1, 2, 2, 0]


def test_merge_paints_three_structures_in_ascending_dice_so_each_overlap_goes_to_the_more_reliable():
    # a (0.8) and c (0.5) from GT; b (0.65) from Pseudo. Voxel 1: a vs b; voxel 2: b vs c; voxel 3: a vs c.
    # Shape's `a` at voxel 3 is not a's selected flavor: ignored.
    maps = {"GT": line(1, 1, 3, 3), "Pseudo": line(0, 2, 2, 0), "Shape": line(0, 0, 0, 1)}
    labels, _ = merge(maps, [row("a", "GT", 0.8), row("b", "Pseudo", 0.65), row("c", "GT", 0.5)])
    assert labels.ravel().tolist() == [1, 1, 2, 3]


def test_equal_dice_goes_to_the_structure_with_the_larger_ground_truth_share():
    maps = {"GT": line(1, 1), "Pseudo": line(2, 0)}
    labels, _ = merge(maps, [row("a", "GT", 0.8, share=0.2), row("b", "Pseudo", 0.8, share=0.9)])
    assert labels.ravel().tolist() == [2, 1]
    labels, _ = merge(maps, [row("a", "GT", 0.8, share=0.9), row("b", "Pseudo", 0.8, share=0.2)])
    assert labels.ravel().tolist() == [1, 1]


def test_full_tie_is_decided_by_name_whatever_the_table_order():
    maps = {"GT": line(1), "Pseudo": line(2)}
    rows = [row("a", "GT", 0.8, 0.5), row("b", "Pseudo", 0.8, 0.5)]
    first, _ = merge(maps, rows)
    second, _ = merge(maps, rows[::-1])
    assert first.ravel().tolist() == second.ravel().tolist() == [2]  # painted a then b: the later name wins


def test_unknown_dice_is_the_base_layer():
    maps = {"GT": line(1), "Pseudo": line(2)}
    labels, _ = merge(maps, [row("a", "GT", math.nan), row("b", "Pseudo", 0.1)])
    assert labels.ravel().tolist() == [2]


def test_voxels_that_no_selected_flavor_claims_stay_background():
    maps = {"GT": line(0, 1), "Pseudo": line(1, 0)}  # Pseudo's `a` is not the selected prediction of a
    labels, _ = merge(maps, [row("a", "GT", 0.9)])
    assert labels.ravel().tolist() == [0, 1]


def test_ground_truth_overwrites_every_prediction_on_its_voxels():
    maps = {"GT": line(1, 1, 0), "Pseudo": line(0, 2, 2)}
    gt = line(3, 3, 7)  # c exactly; 7 = `ignore` of this 6-structure space
    labels, rows = merge(maps, [row("a", "GT", 0.9), row("b", "Pseudo", 0.7), row("c", "Pseudo", 0.1)], gt, {"c"})
    assert labels.ravel().tolist() == [3, 3, 2]
    assert {r.structure: r.origin for r in rows} == {"b": "Pseudo", "c": GROUND_TRUTH}


def test_ground_truth_structure_replaces_its_prediction_so_lower_layers_show_where_gt_says_no():
    # a (0.9, GT flavor) covers voxels 0-1 over b; the volume's ground truth of a is voxel 2 only.
    maps = {"GT": line(1, 1, 0), "Pseudo": line(2, 2, 0)}
    gt = line(0, 0, 1)
    labels, _ = merge(maps, [row("a", "GT", 0.9), row("b", "Pseudo", 0.5)], gt, {"a"})
    assert labels.ravel().tolist() == [2, 2, 1]


def test_ground_truth_map_without_listed_structures_changes_nothing():
    maps = {"GT": line(1, 1, 0)}
    gt = line(2, 2, 2)  # b in the map, but not listed as exact (e.g. a coarse origin): no override
    labels, _ = merge(maps, [row("a", "GT", 0.9), row("b", "GT", 0.8)], gt, set())
    assert labels.ravel().tolist() == [1, 1, 0]


def test_block_flavor_is_the_one_most_often_first():
    rows = [row("v1", "GT", 0.5), row("v2", "Shape", 0.95), row("v3", "Shape", 0.6)]
    assert choose_block_flavor(rows, FLAVORS) == "Shape"


def test_block_flavor_tie_goes_to_higher_mean_dice_then_to_flavor_order():
    rows = [row("v1", "GT", 0.70), row("v2", "Pseudo", 0.75)]
    assert choose_block_flavor(rows, FLAVORS) == "Pseudo"
    rows = [row("v1", "GT", 0.75), row("v2", "Pseudo", 0.75)]
    assert choose_block_flavor(rows, FLAVORS) == "GT"
    assert choose_block_flavor(rows, ("Pseudo", "GT", "Shape")) == "Pseudo"


def scored(structure, first, **dice):
    """A priority row with every flavor's mean Dice (first flavor's from them), as cadsflow.ranking writes."""
    return PriorityRow(structure, 900, first, "", "", dice[first], 0.0, tuple(dice.items()))


def test_block_flavor_is_the_best_over_the_whole_block_not_the_one_first_most_often():
    # GT wins v1 and v2 narrowly but misses v3 (Dice 0): over the block Shape is better (0.9 vs 0.633)
    rows = [scored("v1", "GT", GT=0.95, Shape=0.9), scored("v2", "GT", GT=0.95, Shape=0.9),
            scored("v3", "Shape", GT=0.0, Shape=0.9)]
    assert choose_block_flavor(rows, FLAVORS) == "Shape"
    unit = merge_order(rows, [SPINE], FLAVORS)[0]
    assert (unit.name, unit.flavor, unit.mean_dice) == ("spine", "Shape", pytest.approx(0.9))


def test_block_flavor_is_one_that_is_first_somewhere_so_its_predictions_exist_for_every_volume():
    # Pseudo has the best block mean (0.85) but is first for no structure: flavor_predict never runs it on the
    # non-test volumes. Of GT (mean 0.6) and Shape (0.7), Shape takes the block.
    rows = [scored("v1", "GT", GT=0.9, Pseudo=0.85, Shape=0.6), scored("v2", "Shape", GT=0.3, Pseudo=0.85,
                                                                         Shape=0.8)]
    assert choose_block_flavor(rows, FLAVORS) == "Shape"


def test_block_means_use_only_structures_every_candidate_has_a_dice_for():
    # v3 has no GT score (NaN): the means are over v1 and v2 only, where GT (0.8) beats Shape (0.7); with v3
    # Shape's mean would fall to 0.5, and Shape is first for two of the three
    rows = [scored("v1", "GT", GT=0.8, Shape=0.7), scored("v2", "Shape", GT=0.8, Shape=0.7),
            scored("v3", "Shape", GT=math.nan, Shape=0.1)]
    assert choose_block_flavor(rows, FLAVORS) == "GT"


def test_vertebra_block_is_painted_from_one_flavor_even_where_structures_chose_others():
    # v1 and v3 chose Pseudo, v2 chose GT: the block takes Pseudo for all three, so v2 comes from Pseudo's map.
    maps = {"GT": line(0, 5, 5, 5, 0, 0), "Pseudo": line(4, 4, 5, 6, 6, 0)}
    rows = [row("v1", "Pseudo", 0.8), row("v2", "GT", 0.99), row("v3", "Pseudo", 0.8)]
    labels, prov = merge(maps, rows, blocks=[SPINE])
    assert labels.ravel().tolist() == [4, 4, 5, 6, 6, 0]
    assert {r.origin for r in prov} == {"Pseudo"}


def test_block_is_one_layer_ranked_by_its_flavors_dice():
    # Block flavor Pseudo, its Dice = mean(0.6, 0.8) = 0.7 (v2's 0.99 belongs to GT and does not count):
    # a at 0.75 is painted after the block and wins the shared voxel; b at 0.65 is painted before and loses.
    maps = {"GT": line(1, 2, 0), "Pseudo": line(4, 5, 0)}
    rows = [row("v1", "Pseudo", 0.6), row("v2", "GT", 0.99), row("v3", "Pseudo", 0.8),
            row("a", "GT", 0.75), row("b", "GT", 0.65)]
    labels, _ = merge(maps, rows, blocks=[SPINE])
    assert labels.ravel().tolist() == [1, 5, 0]
    order = [u.name for u in merge_order(rows, [SPINE], FLAVORS)]
    assert order == ["b", "spine", "a"]


def test_ground_truth_of_one_vertebra_replaces_it_inside_its_block():
    maps = {"Pseudo": line(4, 5, 5, 6)}
    gt = line(0, 0, 5, 5)
    rows = [row("v1", "Pseudo", 0.8), row("v2", "Pseudo", 0.8), row("v3", "Pseudo", 0.8)]
    labels, prov = merge(maps, rows, gt, {"v2"}, blocks=[SPINE])
    assert labels.ravel().tolist() == [4, 0, 5, 5]
    assert sorted((r.structure, r.origin, r.n_voxels) for r in prov) == [
        ("v1", "Pseudo", 1), ("v2", GROUND_TRUTH, 2)]


def test_provenance_counts_add_up_to_the_labelled_voxels_of_each_structure():
    rng = np.random.default_rng(0)
    maps = {f: rng.integers(0, 7, size=(6, 5, 4)).astype(np.uint8) for f in FLAVORS}
    gt = rng.integers(0, 8, size=(6, 5, 4)).astype(np.uint8)
    rows = [row("a", "GT", 0.9, 0.1), row("b", "Pseudo", 0.8), row("c", "Shape", 0.8, 0.3),
            row("v1", "Shape", 0.7), row("v2", "GT", 0.6), row("v3", "Shape", 0.5)]
    labels, prov = assemble(maps, rows, gt, {"b"}, [SPINE], label_ids=IDS, flavor_order=FLAVORS, voxel_ml=0.5)
    assert sum(r.n_voxels for r in prov) == np.count_nonzero(labels)
    for name, label_id in IDS.items():
        assert sum(r.n_voxels for r in prov if r.structure == name) == np.count_nonzero(labels == label_id)
    assert all(r.ml == r.n_voxels * 0.5 for r in prov)


def test_missing_selected_flavor_names_the_flavor():
    with pytest.raises(KeyError, match="'Shape'"):
        merge({"GT": line(1)}, [row("a", "Shape", 0.9)])


def test_flavor_maps_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        merge({"GT": line(1, 0), "Pseudo": line(2)}, [row("a", "GT", 0.9), row("b", "Pseudo", 0.8)])


def test_flavor_map_with_a_value_outside_the_group_is_refused():
    with pytest.raises(ValueError, match="outside 0..6"):
        merge({"GT": line(7)}, [row("a", "GT", 0.9)])


def test_structures_without_a_priority_row_are_listed_in_label_order():
    assert missing_structures([row("b", "GT", 0.9)], IDS) == ["a", "c", "v1", "v2", "v3"]


def test_priority_row_of_a_structure_outside_the_group_is_refused():
    with pytest.raises(ValueError, match=r"\['zz'\] are not in the group's label map"):
        merge({"GT": line(1)}, [row("zz", "GT", 0.9)])


def test_read_priority_keeps_the_group_and_reads_na_as_unknown_dice(tmp_path):
    path = tmp_path / "priority.tsv"
    path.write_text("structure\tgroup\tfirst\tsecond\tthird\tmean_dice_first\tgt_share\ttest\n"
                    "spleen\t551\tGT\tPseudo\tShape\t0.91\t0.05\tanova\n"
                    "liver\t551\tShape\tGT\tPseudo\tNA\t0.5\tkruskal\n"
                    "vertebrae_L5\t552\tPseudo\tGT\tShape\t0.8\t0.1\twelch\n")
    rows = read_priority(path, 551)
    assert [(r.structure, r.first, r.gt_share) for r in rows] == [("spleen", "GT", 0.05), ("liver", "Shape", 0.5)]
    assert rows[0].mean_dice_first == 0.91 and math.isnan(rows[1].mean_dice_first)


def test_read_priority_takes_the_first_flavors_mean_dice_from_the_rankings_per_flavor_columns(tmp_path):
    # the layout cadsflow.ranking writes: no mean_dice_first / gt_share, per-flavor means instead
    path = tmp_path / "priority.tsv"
    path.write_text("group\tstructure\tfirst\tsecond\tthird\tsplit_kind\tmean_dice_GT\tmean_dice_Pseudo\t"
                    "mean_dice_Shape\tnote\n"
                    "551\tspleen\tPseudo\tGT\tShape\tOOD\t0.81\t0.93\t0.90\t\n"
                    "551\tliver\tShape\tGT\tPseudo\tID\t0.95\t0.94\t0.96\t\n")
    rows = read_priority(path, 551, gt_shares={"spleen": 0.25})
    assert [(r.structure, r.mean_dice_first, r.gt_share) for r in rows][0] == ("spleen", 0.93, 0.25)
    assert rows[1].mean_dice_first == 0.96 and math.isnan(rows[1].gt_share)
    assert rows[0].flavor_dice == (("GT", 0.81), ("Pseudo", 0.93), ("Shape", 0.90))


def test_read_gt_shares_reads_a_structure_table(tmp_path):
    path = tmp_path / "shares.tsv"
    path.write_text("structure\tgt_share\nspleen\t0.25\nliver\tNA\n")
    shares = read_gt_shares(path)
    assert shares["spleen"] == 0.25 and math.isnan(shares["liver"])
