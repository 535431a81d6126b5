"""Assembly from and to files: blocks from the config, provenance with rib repair, the batch command line, the card."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
from helpers import spacing_affine, write_nifti

from cadsflow.assembly.__main__ import main as assembly_main
from cadsflow.assembly.blocks import AssemblyConfigError, load_blocks, load_flavors
from cadsflow.assembly.card import (
    file_table,
    origin_table,
    structure_table,
    training_counts_from_datasets,
    training_table,
    write_card,
)
from cadsflow.assembly.provenance import (
    EMPTY,
    GROUND_TRUTH,
    QUARANTINED,
    RIB_REPAIR,
    AssemblyRow,
    provenance_rows,
    read_provenance,
    write_provenance,
)
from cadsflow.gt.provenance import ProvenanceRow
from cadsflow.gt.provenance import write_provenance as write_gt_provenance
from cadsflow.labels import load_label_space

SPACE = load_label_space()
AFFINE = spacing_affine((1.5, 1.5, 1.5))
VOXEL_ML = 1.5**3 / 1000


def test_config_blocks_hold_the_cervical_thoracic_lumbar_vertebrae_and_all_ribs():
    blocks = {b.name: b for b in load_blocks()}
    assert {n: (b.group, len(b.structures)) for n, b in blocks.items()} == {
        "cervical_vertebrae": (552, 7), "thoracic_vertebrae": (552, 12), "lumbar_vertebrae": (552, 5),
        "ribs": (555, 24)}
    assert blocks["lumbar_vertebrae"].structures == tuple(f"vertebrae_L{i}" for i in (5, 4, 3, 2, 1))


def test_flavor_order_comes_from_the_flavors_config_unless_the_assembly_config_lists_it(tmp_path):
    assert load_flavors() == ("GT", "Pseudo", "Shape")
    path = tmp_path / "assembly.yaml"
    path.write_text("flavors: [Shape, GT]\n")
    assert load_flavors(path) == ("Shape", "GT")


def test_a_structure_in_two_blocks_is_refused(tmp_path):
    path = tmp_path / "assembly.yaml"
    path.write_text("blocks:\n  a: {group: 552, pattern: 'vertebrae_T1\\d?'}\n"
                    "  b: {group: 552, pattern: 'vertebrae_T12'}\n")
    with pytest.raises(AssemblyConfigError, match="'vertebrae_T12' is in blocks 'a' and 'b'"):
        load_blocks(path)


def test_a_block_pattern_matching_nothing_is_refused(tmp_path):
    path = tmp_path / "assembly.yaml"
    path.write_text("blocks:\n  sacral: {group: 552, pattern: 'vertebrae_S\\d'}\n")
    with pytest.raises(AssemblyConfigError, match="matches no structure"):
        load_blocks(path)


def test_provenance_splits_repaired_voxels_from_the_merge_origin_and_adds_up():
    before = np.array([1, 1, 2, 2, 0, 0], dtype=np.uint8)
    after = np.array([1, 1, 1, 2, 2, 0], dtype=np.uint8)  # voxel 2: 2 -> 1, voxel 4: 0 -> 2
    rows = provenance_rows(after, {"r1": 1, "r2": 2}, {"r1": "Pseudo", "r2": GROUND_TRUTH}, before_repair=before,
                           voxel_ml=2.0)
    assert sorted((r.structure, r.origin, r.n_voxels, r.ml) for r in rows) == [
        ("r1", "Pseudo", 2, 4.0), ("r1", RIB_REPAIR, 1, 2.0), ("r2", GROUND_TRUTH, 1, 2.0), ("r2", RIB_REPAIR, 1, 2.0)]
    assert sum(r.n_voxels for r in rows) == np.count_nonzero(after)


def test_provenance_round_trips_through_its_tsv(tmp_path):
    rows = [AssemblyRow("v1", 551, "liver", "Shape", 10, 0.03375), AssemblyRow("v1", 551, "spleen", GROUND_TRUTH, 3,
                                                                            0.010125)]
    write_provenance(rows, tmp_path / "p.tsv")
    assert read_provenance(tmp_path / "p.tsv") == rows


def _row(volume, structure, ml, origin="Pseudo", group=551):
    return AssemblyRow(volume, group, structure, origin, int(round(ml / VOXEL_ML)), ml)


def test_card_structure_table_counts_volumes_and_takes_the_median_ml():
    rows = [_row("a", "liver", 1.0), _row("b", "liver", 2.0, GROUND_TRUTH), _row("c", "liver", 4.0),
            _row("a", "spleen", 0.5), _row("a", "spleen", 0.25, RIB_REPAIR)]  # two origins of one volume add up
    table = structure_table(rows, SPACE).set_index("structure")
    assert table.loc["liver", ["occurrence", "n_ground_truth"]].tolist() == [3, 1]
    assert table.loc["liver", "median_ml"] == 2.0
    assert table.loc["spleen", "median_ml"] == 0.75
    assert table.loc["kidney_left", "occurrence"] == 0 and math.isnan(table.loc["kidney_left", "median_ml"])
    assert len(table) == 167


def test_card_origin_table_gives_each_origins_share_per_group_and_overall():
    rows = [AssemblyRow("a", 551, "liver", "Shape", 30, 0.0), AssemblyRow("a", 551, "spleen", GROUND_TRUTH, 10, 0.0),
            AssemblyRow("a", 555, "rib_left_1", RIB_REPAIR, 10, 0.0)]
    table = origin_table(rows)
    shares = {(g, o): s for g, o, s in table[["group", "origin", "share"]].itertuples(index=False)}
    assert shares == {("551", "Shape"): 0.75, ("551", GROUND_TRUTH): 0.25, ("555", RIB_REPAIR): 1.0,
                      ("all", "Shape"): 0.6, ("all", GROUND_TRUTH): 0.2, ("all", RIB_REPAIR): 0.2}


def test_card_training_table_orders_stages_as_table_a4_and_reads_dataset_json(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"numTraining": 32}))
    counts = training_counts_from_datasets([("final", 551, tmp_path / "d.json")])
    counts["specialists"] = {551: 5, 552: 6}
    table = training_table(counts, (551, 552))
    assert table["stage"].tolist() == ["specialists", "final"]
    assert table["551"].tolist() == [5, 32]
    assert table.loc[0, "552"] == 6 and table["552"].isna().tolist() == [False, True]


def test_write_card_writes_tables_and_a_page(tmp_path):
    paths = write_card([_row("a", "liver", 1.0)], {"GT": {551: 3}}, tmp_path)
    assert sorted(p.name for p in paths.values()) == ["card.html", "files.tsv", "origins.tsv", "structures.tsv",
                                                      "summary.tsv", "training_images.tsv"]
    assert "Dataset card: 1 assembled volumes" in paths["page"].read_text()


def test_card_file_table_names_each_volumes_map_and_provenance_in_its_batch_folder_and_no_map_when_quarantined():
    batches = {"b1": [_row("v2", "liver", 1.0), _row("v2", "spleen", 1.0), _row("v1", "liver", 1.0, group=551),
                      AssemblyRow("v1", 552, "", QUARANTINED, 0, 0.0, "not a CT")],
               "b0": [AssemblyRow("v0", 551, "", EMPTY, 0, 0.0, "no labelled voxels")]}
    table = file_table(batches, "res/assembled")
    assert table.columns.tolist() == ["volume_id", "group", "batch", "label_map", "provenance"]
    assert table.values.tolist() == [
        ["v0", 551, "b0", "res/assembled/551/b0/v0.nii.gz", "res/assembled/551/b0/v0.provenance.tsv"],
        ["v1", 551, "b1", "res/assembled/551/b1/v1.nii.gz", "res/assembled/551/b1/v1.provenance.tsv"],
        ["v1", 552, "b1", "", "res/assembled/552/b1/v1.provenance.tsv"],
        ["v2", 551, "b1", "res/assembled/551/b1/v2.nii.gz", "res/assembled/551/b1/v2.provenance.tsv"]]


def _write_priority(path, rows):
    lines = ["structure\tgroup\tfirst\tsecond\tthird\tmean_dice_first\tgt_share"]
    lines += [f"{s}\t{g}\t{f}\tx\tx\t{d}\t{share}" for s, g, f, d, share in rows]
    path.write_text("\n".join(lines) + "\n")


def test_batch_cli_merges_flavors_applies_exact_ground_truth_and_writes_provenance(tmp_path):
    ids = SPACE.group_label_map(551)
    shape = (6, 4, 4)
    gt_flavor = np.zeros(shape, np.uint8)
    gt_flavor[0:3] = ids["liver"]
    pseudo = np.zeros(shape, np.uint8)
    pseudo[2:5] = ids["spleen"]
    write_nifti(tmp_path / "flavors/GT/v1.nii.gz", gt_flavor, AFFINE)
    write_nifti(tmp_path / "flavors/Pseudo/v1.nii.gz", pseudo, AFFINE)
    gt = np.zeros(shape, np.uint8)
    gt[5] = ids["stomach"]
    gt[0] = len(ids) + 1  # ignore: overrides nothing
    write_nifti(tmp_path / "gt/v1/group_551.nii.gz", gt, AFFINE)
    write_gt_provenance([ProvenanceRow("stomach", 551, "source_gt", 6, 16),
                         ProvenanceRow("ignore", 551, "unannotated", 0, 16)], tmp_path / "gt/v1/provenance.tsv")
    priority = [(n, 551, "Pseudo", 0.5, 0.0) for n in ids]
    priority = [p for p in priority if p[0] != "liver"] + [("liver", 551, "GT", 0.9, 0.0)]
    _write_priority(tmp_path / "priority.tsv", priority)
    out = tmp_path / "assembled/551"
    assert assembly_main(["batch", "--groups", "551", "--volumes", "v1", "--flavor", f"GT={tmp_path}/flavors/GT",
                          "--flavor", f"Pseudo={tmp_path}/flavors/Pseudo", "--priority", str(tmp_path / "priority.tsv"),
                          "--gt-dirs", str(tmp_path / "gt/v1"), "--out-dir", str(out),
                          "--batch-provenance", str(tmp_path / "batch.tsv")]) == 0
    image = nib.load(str(out / "v1.nii.gz"))
    labels = np.asarray(image.dataobj)
    expected = np.zeros(shape, np.uint8)
    expected[0:3] = ids["liver"]  # liver (0.9) wins the shared slice 2 over spleen (0.5)
    expected[3:5] = ids["spleen"]
    expected[5] = ids["stomach"]  # the volume's exact ground truth
    assert np.array_equal(labels, expected) and np.allclose(image.affine, AFFINE)
    rows = read_provenance(out / "v1.provenance.tsv")
    assert sorted((r.structure, r.origin, r.n_voxels) for r in rows) == [
        ("liver", "GT", 48), ("spleen", "Pseudo", 32), ("stomach", GROUND_TRUTH, 16)]
    assert read_provenance(tmp_path / "batch.tsv") == rows


def test_batch_cli_refines_the_rib_group_with_the_spine_it_just_assembled_and_an_external_tubular_map(tmp_path):
    ribs_ids, spine_ids = SPACE.group_label_map(555), SPACE.group_label_map(552)
    shape = (40, 13, 13)
    ribs = np.zeros(shape, np.uint8)
    ribs[18:35, 4:9, 4:9] = ribs_ids["rib_left_3"]
    ribs[24:27, 4:9, 4:9] = ribs_ids["rib_left_4"]  # a segment with the neighbour's class
    spine = np.zeros(shape, np.uint8)
    spine[:10] = spine_ids["vertebrae_T3"]
    tubular = np.zeros(shape, np.uint8)
    tubular[10:18, 4:9, 4:9] = 1  # the missing joint: 8 x 25 = 200 voxels next to the rib
    write_nifti(tmp_path / "flavors/Shape/555/v1.nii.gz", ribs, AFFINE)
    write_nifti(tmp_path / "flavors/Shape/552/v1.nii.gz", spine, AFFINE)
    write_nifti(tmp_path / "tub/v1_vessels.nii.gz", tubular, AFFINE)
    _write_priority(tmp_path / "priority.tsv", [(n, 555, "Shape", 0.8, 0.0) for n in ribs_ids]
                    + [(n, 552, "Shape", 0.8, 0.0) for n in spine_ids])
    config = tmp_path / "assembly.yaml"
    config.write_text("flavors: [GT, Pseudo, Shape]\nblocks:\n  ribs: {group: 555, pattern: 'rib_(left|right)_\\d+'}\n"
                      f"ribs:\n  opening_radius: 0\n  tubular_map: {tmp_path}/tub/{{volume_id}}_vessels.nii.gz\n")
    out = tmp_path / "assembled"
    assert assembly_main(["batch", "--groups", "555", "552", "--volumes", "v1", "--flavor",
                          f"Shape={tmp_path}/flavors/Shape/{{group}}", "--priority", str(tmp_path / "priority.tsv"),
                          "--gt-dirs", "none", "--out-dir", f"{out}/{{group}}", "--batch-provenance",
                          str(tmp_path / "batch.tsv"), "--config", str(config)]) == 0
    labels = np.asarray(nib.load(str(out / "555/v1.nii.gz")).dataobj)
    expected = np.zeros(shape, np.uint8)
    expected[10:35, 4:9, 4:9] = ribs_ids["rib_left_3"]
    assert np.array_equal(labels, expected)
    assert np.array_equal(np.asarray(nib.load(str(out / "552/v1.nii.gz")).dataobj), spine)
    rows = read_provenance(tmp_path / "batch.tsv")
    assert sorted((r.group, r.structure, r.origin, r.n_voxels) for r in rows) == [
        (552, "vertebrae_T3", "Shape", 10 * 13 * 13),
        (555, "rib_left_3", "Shape", 14 * 25), (555, "rib_left_3", RIB_REPAIR, 11 * 25)]  # 3 relabelled + 8 joint


def test_batch_cli_names_the_missing_flavor_prediction(tmp_path):
    ids = SPACE.group_label_map(551)
    _write_priority(tmp_path / "priority.tsv", [(n, 551, "GT", 0.8, 0.0) for n in ids])
    with pytest.raises(FileNotFoundError, match="flavor 'GT' prediction .*v9.nii.gz is missing"):
        assembly_main(["batch", "--groups", "551", "--volumes", "v9", "--flavor", f"GT={tmp_path}", "--priority",
                       str(tmp_path / "priority.tsv"), "--gt-dirs", "none", "--out-dir", str(tmp_path / "o"),
                       "--batch-provenance", str(tmp_path / "b.tsv")])
