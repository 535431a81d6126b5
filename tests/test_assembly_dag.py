"""The assembly stage as the DAG runs it: the rules' command-line words, quarantined volumes, resuming a killed
batch by fingerprint, and the card's training counts from dataset.json files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from helpers import spacing_affine, write_nifti

from cadsflow.assembly.__main__ import build_parser, flavor_dirs_of
from cadsflow.assembly.__main__ import main as assembly_main
from cadsflow.assembly.dag import dataset_json_args, flavor_dir_args, prediction_dirs, training_datasets
from cadsflow.assembly.provenance import EMPTY, QUARANTINED, AssemblyRow, read_provenance, write_provenance
from cadsflow.labels import load_label_space
from cadsflow.pseudolabel.infer import running_marker, stored_fingerprint

SPACE = load_label_space()
IDS = SPACE.group_label_map(551)
AFFINE = spacing_affine((1.5, 1.5, 1.5))
SHAPE = (6, 4, 4)


def _job_dir_of(group, volume_id):  # two volumes share part 0's folder, the validation volume has its own
    return f"r/{group}/validation" if volume_id == "t" else f"r/{group}/part_0"


def test_prediction_dirs_lists_each_prediction_jobs_folder_once_in_sorted_order():
    assert prediction_dirs(["b", "t", "a"], [552, 551], _job_dir_of) == [
        "r/551/part_0", "r/551/validation", "r/552/part_0", "r/552/validation"]


def test_flavor_dir_words_name_each_flavors_subfolder_of_every_job_folder_and_parse_back_per_group():
    words = flavor_dir_args(["a", "t"], [551, 552], ["GT", "Pseudo"], _job_dir_of)
    assert words[:8] == ["--flavor-dir", "551", "GT", "r/551/part_0/GT", "--flavor-dir", "551", "GT",
                         "r/551/validation/GT"]
    assert len(words) == 2 * 2 * 2 * 4  # groups x flavors x job folders, 4 words each
    args = build_parser().parse_args(["batch", "--groups", "551", "552", "--volumes", "a", "t", *words, "--priority",
                                      "p.tsv", "--out-dir", "o/{group}", "--batch-provenance", "b.tsv"])
    assert flavor_dirs_of(args, 552) == {"GT": ["r/552/part_0/GT", "r/552/validation/GT"],
                                         "Pseudo": ["r/552/part_0/Pseudo", "r/552/validation/Pseudo"]}
    assert flavor_dirs_of(args, 551)["Pseudo"] == ["r/551/part_0/Pseudo", "r/551/validation/Pseudo"]


def test_a_groups_flavor_dir_wins_over_the_flavor_template():
    args = build_parser().parse_args(["batch", "--groups", "551", "--volumes", "v1", "--flavor", "GT=all/{group}",
                                      "--flavor", "Shape=s/{group}", "--flavor-dir", "551", "GT", "own",
                                      "--priority", "p", "--out-dir", "o", "--batch-provenance", "b"])
    assert flavor_dirs_of(args, 551) == {"GT": ["own"], "Shape": ["s/551"]}


def test_training_datasets_list_specialists_then_each_flavor_then_final_and_parse_back():
    entries = training_datasets([551, 552], ["GT", "Shape"], lambda g: f"sp/{g}.json", lambda g, f: f"{f}/{g}.json",
                                lambda g: f"final/{g}.json")
    assert entries == [("specialists", 551, "sp/551.json"), ("specialists", 552, "sp/552.json"),
                       ("GT", 551, "GT/551.json"), ("GT", 552, "GT/552.json"), ("Shape", 551, "Shape/551.json"),
                       ("Shape", 552, "Shape/552.json"), ("final", 551, "final/551.json"),
                       ("final", 552, "final/552.json")]
    args = build_parser().parse_args(["card", "--provenance", "a.tsv", *dataset_json_args(entries[:1]),
                                      "--out-dir", "card"])
    assert args.dataset_json == [["specialists", "551", "sp/551.json"]]
    assert training_datasets([551], ["GT"], str, lambda g, f: "x", None) == [("specialists", 551, "551"),
                                                                              ("GT", 551, "x")]


def test_card_command_counts_training_images_from_each_stages_dataset_json(tmp_path):
    counts = {("specialists", 551): 5, ("GT", 551): 5, ("Pseudo", 551): 17, ("Shape", 551): 15, ("final", 551): 19,
              ("specialists", 552): 4}
    entries = []
    for (stage, group), n in counts.items():
        path = tmp_path / f"{stage}_{group}.json"
        path.write_text(json.dumps({"numTraining": n, "name": "x"}))
        entries.append((stage, group, str(path)))
    write_provenance([AssemblyRow("v1", 551, "liver", "GT", 10, 0.03), AssemblyRow("v2", 551, "", QUARANTINED, 0,
                                                                                  0.0, "quarantined: not a CT")],
                     tmp_path / "batch.tsv")
    assert assembly_main(["card", "--provenance", str(tmp_path / "batch.tsv"), *dataset_json_args(entries),
                          "--out-dir", str(tmp_path / "card")]) == 0
    table = (tmp_path / "card/training_images.tsv").read_text().splitlines()
    assert table[0].split("\t")[:3] == ["stage", "551", "552"]
    assert [line.split("\t")[:3] for line in table[1:]] == [
        ["specialists", "5", "4"], ["GT", "5", ""], ["Pseudo", "17", ""], ["Shape", "15", ""], ["final", "19", ""]]
    summary = (tmp_path / "card/summary.tsv").read_text().splitlines()
    assert summary[1:] == ["assembled_volumes\t1", "quarantined_volumes\t1", "groups\t1"]
    files = (tmp_path / "card/files.tsv").read_text().splitlines()  # the batch is the provenance table's name
    folder = "results/assembled/551/batch"  # the default --maps-root
    assert files == ["volume_id\tgroup\tbatch\tlabel_map\tprovenance",
                     f"v1\t551\tbatch\t{folder}/v1.nii.gz\t{folder}/v1.provenance.tsv",
                     f"v2\t551\tbatch\t\t{folder}/v2.provenance.tsv"]


def _write_priority(path, flavor="Pseudo"):
    lines = ["structure\tgroup\tfirst\tsecond\tthird\tmean_dice_first\tgt_share"]
    lines += [f"{s}\t551\t{flavor}\tGT\tShape\t0.5\t0.0" for s in IDS]
    path.write_text("\n".join(lines) + "\n")


def _standardized(root, volume_id, status="ok", reason=""):
    folder = root / "std" / volume_id
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({"volume_id": volume_id, "status": status, "reason": reason}))


def _batch_args(tmp_path, volumes):
    return ["batch", "--groups", "551", "--volumes", *volumes, "--flavor-dir", "551", "Pseudo",
            str(tmp_path / "pred"), "--priority", str(tmp_path / "priority.tsv"), "--standardized",
            str(tmp_path / "std"), "--gt-batch", str(tmp_path / "gt"), "--out-dir", str(tmp_path / "out/{group}"),
            "--batch-provenance", str(tmp_path / "prov/batch.tsv")]


def _pseudo(volume_id, tmp_path, slices):
    labels = np.zeros(SHAPE, np.uint8)
    labels[slices] = IDS["liver"]
    write_nifti(tmp_path / f"pred/{volume_id}.nii.gz", labels, AFFINE)
    return labels


def test_a_quarantined_volume_gets_a_provenance_line_and_no_map_while_its_batch_mate_is_assembled(tmp_path):
    _write_priority(tmp_path / "priority.tsv")
    _standardized(tmp_path, "ok1")
    _standardized(tmp_path, "bad1", "quarantined", "no HU:\nnot a CT")
    _pseudo("ok1", tmp_path, slice(0, 2))
    (tmp_path / "out/551").mkdir(parents=True)
    (tmp_path / "out/551/bad1.nii.gz").write_bytes(b"stale map of an earlier run")
    assert assembly_main(_batch_args(tmp_path, ["ok1", "bad1"])) == 0
    rows = read_provenance(tmp_path / "prov/batch.tsv")
    assert [(r.volume_id, r.structure, r.origin, r.n_voxels, r.note) for r in rows] == [
        ("bad1", "", QUARANTINED, 0, "quarantined: no HU: not a CT"), ("ok1", "liver", "Pseudo", 32, "")]
    assert not (tmp_path / "out/551/bad1.nii.gz").exists()
    assert read_provenance(tmp_path / "out/551/bad1.provenance.tsv") == rows[:1]
    assert (tmp_path / "out/551/ok1.nii.gz").is_file()
    assert not running_marker(tmp_path / "prov/batch.tsv").exists()  # a finished job leaves no marker


def test_a_batch_finds_each_volumes_prediction_in_whichever_prediction_job_folder_holds_it(tmp_path):
    """The validation job's and a part job's folders both hold Pseudo maps of the batch: one --flavor-dir each."""
    _write_priority(tmp_path / "priority.tsv")
    for v, job, rows in (("val", "validation", slice(0, 1)), ("other", "part_0", slice(0, 3))):
        _standardized(tmp_path, v)
        labels = np.zeros(SHAPE, np.uint8)
        labels[rows] = IDS["liver"]
        write_nifti(tmp_path / f"fp/551/{job}/Pseudo/{v}.nii.gz", labels, AFFINE)
    args = _batch_args(tmp_path, ["val", "other"])
    at = args.index(str(tmp_path / "pred"))
    args[at - 3:at + 1] = ["--flavor-dir", "551", "Pseudo", str(tmp_path / "fp/551/validation/Pseudo"),
                           "--flavor-dir", "551", "Pseudo", str(tmp_path / "fp/551/part_0/Pseudo")]
    assert assembly_main(args) == 0
    rows = read_provenance(tmp_path / "prov/batch.tsv")
    assert [(r.volume_id, r.structure, r.n_voxels) for r in rows] == [("other", "liver", 48), ("val", "liver", 16)]


def test_a_volume_with_a_prediction_in_two_job_folders_is_refused_naming_both(tmp_path):
    """Folders of an older part numbering left on disk: either map could be of another run."""
    _write_priority(tmp_path / "priority.tsv")
    _standardized(tmp_path, "v1")
    for job in ("part_0", "part_1"):
        write_nifti(tmp_path / f"fp/{job}/Pseudo/v1.nii.gz", np.zeros(SHAPE, np.uint8), AFFINE)
    args = _batch_args(tmp_path, ["v1"])
    at = args.index(str(tmp_path / "pred"))
    args[at - 3:at + 1] = ["--flavor-dir", "551", "Pseudo", str(tmp_path / "fp/part_0/Pseudo"),
                           "--flavor-dir", "551", "Pseudo", str(tmp_path / "fp/part_1/Pseudo")]
    with pytest.raises(ValueError, match=r"volume v1 has a map in two job folders: .*part_0/Pseudo/v1\.nii\.gz and "
                                         r".*part_1/Pseudo/v1\.nii\.gz"):
        assembly_main(args)


def test_a_batch_of_only_quarantined_volumes_still_creates_each_groups_declared_folder(tmp_path):
    _write_priority(tmp_path / "priority.tsv")
    _standardized(tmp_path, "bad1", "quarantined", "not a CT")
    assert assembly_main(_batch_args(tmp_path, ["bad1"])) == 0
    assert sorted(p.name for p in (tmp_path / "out/551").iterdir()) == ["bad1.provenance.tsv"]


def test_an_empty_assembled_map_gets_one_empty_line(tmp_path):
    _write_priority(tmp_path / "priority.tsv")
    _standardized(tmp_path, "v1")
    write_nifti(tmp_path / "pred/v1.nii.gz", np.zeros(SHAPE, np.uint8), AFFINE)
    assert assembly_main(_batch_args(tmp_path, ["v1"])) == 0
    assert [(r.structure, r.origin, r.n_voxels) for r in read_provenance(tmp_path / "prov/batch.tsv")] == [
        ("", EMPTY, 0)]
    assert not np.asarray(nib.load(tmp_path / "out/551/v1.nii.gz").dataobj).any()


def test_ground_truth_comes_from_the_volumes_folder_in_the_gt_batch_when_it_has_one(tmp_path):
    from cadsflow.gt.provenance import ProvenanceRow
    from cadsflow.gt.provenance import write_provenance as write_gt_provenance

    _write_priority(tmp_path / "priority.tsv")
    for v in ("with_gt", "without"):
        _standardized(tmp_path, v)
        _pseudo(v, tmp_path, slice(0, 2))
    gt = np.zeros(SHAPE, np.uint8)
    gt[5] = IDS["spleen"]
    write_nifti(tmp_path / "gt/with_gt/group_551.nii.gz", gt, AFFINE)
    write_gt_provenance([ProvenanceRow("spleen", 551, "source_gt", 3, 16)], tmp_path / "gt/with_gt/provenance.tsv")
    assert assembly_main(_batch_args(tmp_path, ["with_gt", "without"])) == 0
    rows = read_provenance(tmp_path / "prov/batch.tsv")
    assert [(r.volume_id, r.structure, r.origin, r.n_voxels) for r in rows] == [
        ("with_gt", "liver", "Pseudo", 32), ("with_gt", "spleen", "ground_truth", 16),
        ("without", "liver", "Pseudo", 32)]


def test_rerun_after_a_kill_keeps_maps_with_the_current_fingerprint_and_redoes_changed_ones(tmp_path):
    _write_priority(tmp_path / "priority.tsv")
    for v in ("a", "b"):
        _standardized(tmp_path, v)
        _pseudo(v, tmp_path, slice(0, 2))
    assert assembly_main(_batch_args(tmp_path, ["a", "b"])) == 0
    stamp_a = stored_fingerprint(tmp_path / "out/551/a.nii.gz")
    assert stamp_a and stamp_a == stored_fingerprint(tmp_path / "out/551/b.nii.gz")  # same inputs, same stamp
    # a killed run: its marker is left; a's files untouched (recognisable provenance), b's prediction changed
    running_marker(tmp_path / "prov/batch.tsv").write_text("running\n")
    write_provenance([AssemblyRow("a", 551, "liver", "Pseudo", 999, 1.0)], tmp_path / "out/551/a.provenance.tsv")
    _pseudo("b", tmp_path, slice(0, 3))
    assert assembly_main(_batch_args(tmp_path, ["a", "b"])) == 0
    rows = {r.volume_id: r.n_voxels for r in read_provenance(tmp_path / "prov/batch.tsv")}
    assert rows == {"a": 999, "b": 48}  # a kept (its rows read back), b assembled again from its new prediction
    assert int((np.asarray(nib.load(tmp_path / "out/551/b.nii.gz").dataobj) > 0).sum()) == 48
    # without a marker (a normal rerun, e.g. changed code) every volume is assembled again
    assert assembly_main(_batch_args(tmp_path, ["a", "b"])) == 0
    assert {r.volume_id: r.n_voxels for r in read_provenance(tmp_path / "prov/batch.tsv")} == {"a": 32, "b": 48}


def test_a_batch_of_an_unreadable_standardization_record_names_the_volume(tmp_path):
    _write_priority(tmp_path / "priority.tsv")
    (tmp_path / "std").mkdir()
    with pytest.raises(SystemExit, match="volume v9: cannot read its standardization record"):
        assembly_main(_batch_args(tmp_path, ["v9"]))
