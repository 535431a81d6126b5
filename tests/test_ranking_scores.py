"""Validation scores of the flavors (cadsflow.flavors.scores): ID/OOD, the evaluation engine's Dice and HD95 of
constructed predictions whose overlap is known, group label ids read as the group's structures, merged classes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from helpers import spacing_affine, write_nifti

from cadsflow.flavors.scores import ID, OOD, ValidationVolume, predictions_from_reports, score_flavors, split_kind
from cadsflow.labels import load_label_space

AFFINE = spacing_affine((1.5, 1.5, 1.5))
SHAPE = (12, 12, 12)
SPACE = load_label_space()
L5, L4 = SPACE.by_name("vertebrae_L5"), SPACE.by_name("vertebrae_L4")  # group 552: label ids 1, 2; global 18, 19


def _alignment(tmp_path, sources: dict | None = None) -> str:
    path = tmp_path / "alignment.yaml"
    path.write_text(json.dumps({"unknown_sources": "unified", "sources": sources or {}}))
    return str(path)


def _tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _cube(lo, hi) -> tuple[slice, slice, slice]:
    return slice(lo, hi), slice(2, 4), slice(2, 4)


def test_a_volume_of_the_groups_training_sources_is_id_and_any_other_source_ood():
    assert split_kind("totalsegmentator", {"totalsegmentator"}) == ID
    assert split_kind("verse", {"totalsegmentator"}) == OOD


def test_dice_and_hd95_of_a_half_overlap_and_an_exact_prediction_in_group_label_ids(tmp_path):
    reference = np.zeros(SHAPE, np.uint8)
    reference[_cube(2, 6)] = L5.global_id  # 16 voxels, unified ids (source 'unified')
    reference[_cube(8, 10)] = L4.global_id  # 8 voxels
    folder = tmp_path / "standardized" / "ct_0"
    write_nifti(folder / "label.nii.gz", reference, AFFINE)
    half = np.zeros(SHAPE, np.uint8)
    half[_cube(2, 4)] = L5.label_id  # 8 of L5's 16 voxels: Dice 2 * 8 / (16 + 8) = 2/3
    half[_cube(8, 10)] = L4.label_id  # exact: Dice 1, HD95 0
    exact = np.where(reference == L5.global_id, L5.label_id, 0) + np.where(reference == L4.global_id, L4.label_id, 0)
    predictions = {"GT": {"ct_0": write_nifti(tmp_path / "GT" / "ct_0.nii.gz", half.astype(np.uint8), AFFINE)},
                   "Pseudo": {"ct_0": write_nifti(tmp_path / "Pseudo" / "ct_0.nii.gz", exact.astype(np.uint8),
                                                  AFFINE)}}
    out = tmp_path / "scores.tsv"
    score_flavors([ValidationVolume("ct_0", "unified", str(folder))], 552, predictions, {"unified"}, out,
                  _alignment(tmp_path))
    rows = {(r["flavor"], r["structure"]): r for r in _tsv(out)}
    assert {s for _, s in rows} == {s.name for s in SPACE.group(552)}  # the group's structures only
    gt_l5, gt_l4, pseudo_l5 = rows["GT", "vertebrae_L5"], rows["GT", "vertebrae_L4"], rows["Pseudo", "vertebrae_L5"]
    assert float(gt_l5["dice"]) == pytest.approx(2 / 3, abs=1e-6) and gt_l5["status"] == "scored"
    assert (float(gt_l4["dice"]), float(gt_l4["hd95"])) == (1.0, 0.0)
    assert (float(pseudo_l5["dice"]), float(pseudo_l5["hd95"])) == (1.0, 0.0)
    # the half prediction misses reference slices x = 4, 5: the reference's far face (x = 5, 4 of the box's 40 face
    # units: more than 5% of its surface) lies 2 voxels = 3 mm from the prediction, nothing farther: HD95 = 3 mm
    assert float(gt_l5["hd95"]) == 3.0
    assert {r["split_kind"] for r in rows.values()} == {ID}
    assert rows["GT", "vertebrae_T1"]["status"] == "absent"  # in neither: no score, left out by the ranking


def test_a_merged_class_gives_its_score_to_each_of_its_structures_and_other_sources_are_ood(tmp_path):
    reference = np.zeros(SHAPE, np.uint8)
    reference[_cube(2, 6)] = 1  # one 'kidneys' label, as KiTS has
    folder = tmp_path / "standardized" / "kits_0"
    write_nifti(folder / "label.nii.gz", reference, AFFINE)
    left, right = SPACE.by_name("kidney_left"), SPACE.by_name("kidney_right")
    prediction = np.zeros(SHAPE, np.uint8)
    prediction[_cube(2, 4)] = left.label_id
    prediction[_cube(4, 6)] = right.label_id  # together exactly the reference
    maps = {"Shape": {"kits_0": write_nifti(tmp_path / "Shape" / "kits_0.nii.gz", prediction, AFFINE)}}
    alignment = _alignment(tmp_path, {"kits": {"classes": {"kidneys": {"reference": [1],
                                                                       "prediction": ["kidney_left",
                                                                                      "kidney_right"]}}}})
    out = tmp_path / "scores.tsv"
    score_flavors([ValidationVolume("kits_0", "kits", str(folder))], 551, maps, {"totalsegmentator"}, out, alignment)
    rows = _tsv(out)
    assert [(r["structure"], r["class"], r["split_kind"], float(r["dice"])) for r in rows] == [
        ("kidney_left", "kidneys", OOD, 1.0), ("kidney_right", "kidneys", OOD, 1.0)]


def test_a_quarantined_volume_without_label_map_and_a_flavor_without_prediction_add_no_rows(tmp_path):
    (tmp_path / "standardized" / "ct_q").mkdir(parents=True)  # quarantined: no label.nii.gz
    out = tmp_path / "scores.tsv"
    rows = score_flavors([ValidationVolume("ct_q", "unified", str(tmp_path / "standardized" / "ct_q"))], 552,
                         {"GT": {}}, set(), out, _alignment(tmp_path))
    assert rows == [] and _tsv(out) == []
    assert out.read_text().splitlines()[0].split("\t")[:7] == [
        "structure", "group", "flavor", "volume_id", "split_kind", "dice", "hd95"]


def test_only_volumes_the_validation_report_lists_as_predicted_are_read(tmp_path):
    report = tmp_path / "551" / "validation.tsv"
    report.parent.mkdir()
    report.write_text("volume_id\tflavor\tstatus\treason\n"
                      "a\tGT\tok\tpredicted\n"
                      "a\tPseudo\tfailed\tRuntimeError: x\n"
                      "b\tGT\tquarantined\tnot a CT\n"
                      "c\tPseudo\tskipped_no_brain\ttoo little brain\n")
    folder = tmp_path / "551" / "validation"  # flavor_validate's declared folder beside its report
    assert predictions_from_reports({"v": report}, folder) == {
        "GT": {"a": str(folder / "GT" / "a.nii.gz")},
        "Pseudo": {"c": str(folder / "Pseudo" / "c.nii.gz")},
    }


def test_priority_has_a_row_for_every_structure_of_the_groups_and_the_first_flavors_gt_share(tmp_path):
    from cadsflow.ranking.__main__ import main
    from cadsflow.ranking.tables import read_priority

    scores = tmp_path / "scores.tsv"
    lines = ["structure\tgroup\tflavor\tvolume_id\tsplit_kind\tdice\thd95"]
    for i in range(12):  # vertebrae_L5: Shape clearly best on OOD volumes
        for flavor, mean in (("GT", 0.6), ("Pseudo", 0.7), ("Shape", 0.9)):
            lines.append(f"vertebrae_L5\t552\t{flavor}\tv{i:02d}\tOOD\t{mean + 0.01 * (i % 4)}\t{10 * (1 - mean)}")
    scores.write_text("\n".join(lines) + "\n")
    shares = {}
    for flavor, share in (("GT", "1.0"), ("Pseudo", "0.25"), ("Shape", "0.2")):
        shares[flavor] = tmp_path / f"{flavor}_gt_share.tsv"
        shares[flavor].write_text("structure\tn_volumes_with_structure\tn_from_gt\tgt_share\n"
                                  f"vertebrae_L5\t8\t2\t{share}\nvertebrae_L4\t4\t4\t1.0\n")
    out, png = tmp_path / "priority.tsv", tmp_path / "priority.png"
    args = ["--scores", str(scores), "--out", str(out), "--figure", str(png), "--groups", "552"]
    for flavor, path in shares.items():
        args += ["--gt-share", flavor, "552", str(path)]
    assert main(args) == 0
    table = read_priority(out)
    assert sorted(table["structure"]) == sorted(s.name for s in SPACE.group(552))  # 24 rows, scored or not
    l5 = table[table["structure"] == "vertebrae_L5"].iloc[0]
    assert (l5["first"], l5["split_kind"], l5["gt_share"], l5["gt_share_GT"]) == ("Shape", "OOD", "0.2", "1")
    l4 = table[table["structure"] == "vertebrae_L4"].iloc[0]
    assert (l4["first"], l4["second"], l4["third"], l4["decided_by"], l4["gt_share"], l4["gt_share_Pseudo"]) == (
        "GT", "Pseudo", "Shape", "no_scores", "1", "1")
    assert l4["note"] == "no validation volume annotates it: configured flavor order"
    t1 = table[table["structure"] == "vertebrae_T1"].iloc[0]
    assert (t1["first"], t1["gt_share"]) == ("GT", "NaN")  # in no share table: unknown
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_gt_share_table_without_its_columns_is_refused_naming_the_file(tmp_path):
    from cadsflow.ranking.tables import read_gt_shares

    path = tmp_path / "cads_gt_share.tsv"
    path.write_text("structure\tshare\nliver\t0.5\n")
    with pytest.raises(ValueError, match=r"cads_gt_share\.tsv: the ground-truth share table lacks column\(s\) gt_share"):
        read_gt_shares([("GT", "551", path)])
