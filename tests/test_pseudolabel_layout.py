"""Pseudo-label maps in their shard job's declared folder (results/pseudolabels/<G>/shard_<k>/<id>.nii.gz, beside
the report shard_<k>.tsv): the status table names each map, head gating reads group 553's maps from one folder or
several, a shard of quarantined volumes still leaves its folder, and the DAG declares the folders and wires them to
their readers."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from helpers import write_nifti

from cadsflow.layout import map_path
from cadsflow.pseudolabel.infer import (
    OK,
    QUARANTINED,
    SKIPPED_NO_BRAIN,
    ShardReport,
    VolumeOutcome,
    predict_shard,
    read_report,
    write_report,
    write_status_table,
)
from cadsflow.pseudolabel.postprocess import brain_label_id
from test_pseudolabel_infer import AFFINE, standardized

SHAPE = (12, 10, 8)


def _rows(path):
    with open(path, newline="") as handle:
        return [list(r.values()) for r in csv.DictReader(handle, delimiter="\t")]


def _shard(root, group, k, outcomes, maps=()):
    """A finished shard: its report and, in the folder beside it, a map of each volume in `maps`."""
    report = root / str(group) / f"shard_{k}.tsv"
    write_report(ShardReport([VolumeOutcome(*o) for o in outcomes]), report)
    for volume_id in maps:
        write_nifti(map_path(report.with_suffix(""), volume_id), np.zeros(SHAPE, np.uint8), AFFINE)
    return report


def _brain(folder, volume_id, n_brain):
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels.reshape(-1)[:n_brain] = brain_label_id()
    return write_nifti(map_path(folder, volume_id), labels, AFFINE)


def test_status_table_names_each_map_in_its_shard_folder_and_leaves_it_empty_without_one(tmp_path):
    reports = [
        _shard(tmp_path, 558, 0, [("h1", SKIPPED_NO_BRAIN, "brain 10 voxels")], maps=["h1"]),
        _shard(tmp_path, 551, 1, [("c", OK, "predicted")], maps=["c"]),
        _shard(tmp_path, 551, 0, [("a", OK, "predicted"), ("b", QUARANTINED, "not a CT")], maps=["a"]),
    ]
    write_status_table(reports, tmp_path / "status.tsv")
    root = str(tmp_path)
    assert (tmp_path / "status.tsv").read_text().splitlines()[0] == "group\tvolume_id\tstatus\treason\tlabel_map"
    assert _rows(tmp_path / "status.tsv") == [
        ["551", "a", OK, "predicted", f"{root}/551/shard_0/a.nii.gz"],
        ["551", "b", QUARANTINED, "not a CT", ""],
        ["551", "c", OK, "predicted", f"{root}/551/shard_1/c.nii.gz"],
        ["558", "h1", SKIPPED_NO_BRAIN, "brain 10 voxels", f"{root}/558/shard_0/h1.nii.gz"],
    ]


def test_status_table_refuses_a_report_whose_ok_volume_has_no_map_in_the_shard_folder(tmp_path):
    report = _shard(tmp_path, 551, 0, [("a", OK, "predicted"), ("b", OK, "predicted")], maps=["a"])
    with pytest.raises(FileNotFoundError, match=r"551/shard_0\.tsv: volume b is ok but its label map is not in "
                                                r".*551/shard_0$"):
        write_status_table([report], tmp_path / "status.tsv")
    assert not (tmp_path / "status.tsv").exists()


def test_a_shard_of_quarantined_volumes_leaves_its_declared_folder_empty(tmp_path):
    volumes = [standardized(tmp_path, v, status="quarantined") for v in ("a", "b")]
    out = tmp_path / "551" / "shard_0"
    report = predict_shard(tmp_path / "no_model", "all", volumes, out, 551,
                           report_path=tmp_path / "551" / "shard_0.tsv")
    assert report.model_loads == 0 and [o.status for o in report.outcomes] == [QUARANTINED, QUARANTINED]
    assert out.is_dir() and list(out.iterdir()) == []


def test_head_gating_finds_each_volumes_brain_in_any_of_several_553_folders(tmp_path):
    """A flavor prediction part covers several shards: its brain maps lie in one 553 folder per shard."""
    shard0, shard1 = tmp_path / "553" / "shard_0", tmp_path / "553" / "shard_1"
    _brain(shard0, "h0", n_brain=10)
    _brain(shard1, "h1", n_brain=150)
    volumes = [standardized(tmp_path, v) for v in ("h0", "h1")]
    out = tmp_path / "557" / "part_0"
    report = predict_shard(tmp_path / "no_model", "all", volumes, out, 557, brain_dir=[shard0, str(shard1)])
    assert [(o.volume_id, o.status) for o in report.outcomes] == [("h0", SKIPPED_NO_BRAIN), ("h1", SKIPPED_NO_BRAIN)]
    assert "10 voxels" in report.outcomes[0].reason and "150 voxels" in report.outcomes[1].reason
    assert report.model_loads == 0 and sorted(p.name for p in out.iterdir()) == ["h0.nii.gz", "h1.nii.gz"]


def test_a_brain_missing_from_every_553_folder_fails_its_volume_naming_each_place_looked(tmp_path):
    shard0, shard1 = tmp_path / "553" / "shard_0", tmp_path / "553" / "shard_1"
    _brain(shard0, "h0", n_brain=10)
    shard1.mkdir()
    volumes = [standardized(tmp_path, v) for v in ("h0", "gone")]
    report = predict_shard(tmp_path / "no_model", "all", volumes, tmp_path / "558" / "shard_0", 558,
                           brain_dir=[shard0, shard1], report_path=tmp_path / "558" / "shard_0.tsv")
    outcomes = {o.volume_id: o for o in read_report(tmp_path / "558" / "shard_0.tsv")}
    assert outcomes["h0"].status == SKIPPED_NO_BRAIN and outcomes["gone"].status == "failed"
    assert (f"{shard0}/gone.nii.gz or {shard1}/gone.nii.gz: group 553 label map of volume gone is missing"
            in outcomes["gone"].reason)


def test_a_brain_map_in_two_553_shard_folders_fails_the_job_naming_both(tmp_path):
    """Folders of an older sharding left on disk: reading either map could mix two runs."""
    shard0, shard1 = tmp_path / "553" / "shard_0", tmp_path / "553" / "shard_1"
    _brain(shard0, "h0", n_brain=10)
    _brain(shard1, "h0", n_brain=10)
    with pytest.raises(ValueError, match=r"volume h0 has a map in two job folders: .*553/shard_0/h0\.nii\.gz and "
                                         r".*553/shard_1/h0\.nii\.gz"):
        predict_shard(tmp_path / "no_model", "all", [standardized(tmp_path, "h0")], tmp_path / "557" / "shard_0",
                      557, brain_dir=[shard0, shard1])


@pytest.mark.slow
def test_the_dag_declares_each_shard_folder_and_hands_it_to_head_gating_shape_qc_and_flavor_datasets(tmp_path):
    from workflow_runner import dry_run_jobs, snakemake, write_config

    config = write_config(tmp_path, pseudolabel={"shard_size": 8})  # 3 shards a group (the smoke preset: 1)
    targets = ["results/pseudolabels/status.tsv", "results/shape_qc/558/excluded.tsv",
               "results/shape_qc/558/gallery.png", "results/flavors/Pseudo/nnUNet_raw/Dataset558_HeadNeck/dataset.json"]
    proc = snakemake(tmp_path, *targets, "-n", "-p", config=config)
    jobs = dry_run_jobs(proc.stdout)
    shards = jobs["pseudolabel_shard"]
    assert len(shards) == 27  # 9 groups x 3 demo shards
    for job in shards:
        report = job["output"][0]
        assert job["output"] == [report, report.removesuffix(".tsv")]  # the folder beside the report
        assert f"--out-dir {report.removesuffix('.tsv')} " in job["shell"]
    head = next(j for j in shards if "results/pseudolabels/558/shard_1.tsv" in j["output"])
    assert {"results/pseudolabels/553/shard_1", "results/pseudolabels/552/shard_1"} <= set(head["input"])
    assert "--brain-dir results/pseudolabels/553/shard_1 --vertebrae-dir results/pseudolabels/552/shard_1" in (
        head["shell"])
    folders = [f"results/pseudolabels/558/shard_{k}" for k in range(3)]
    assert set(folders) <= set(jobs["pseudolabel_status"][0]["input"])
    assert set(folders) <= {f for j in jobs["shape_qc_score"] for f in j["input"]}
    assert set(folders) <= set(jobs["shape_qc_gallery"][0]["input"])
    assert set(folders) <= set(jobs["flavor_dataset"][0]["input"])
    assert "--pseudo-dir" not in jobs["flavor_dataset"][0]["shell"]
    assert not (tmp_path / "results").exists()  # a dry run writes nothing
