"""A volume whose standardization crashes (an error that is not a validation failure) is recorded as failed, its
batch-mates keep their results, and every later stage treats the failed record as failed:

- standardize_batch writes a record with status "failed" and the exception, and nothing else, for that volume;
- the quarantine table lists it with its reason and status.tsv says "failed";
- pseudo-labeling reports it failed in every group's shard (never "quarantined", never predicted), and with
  `pseudolabel.fail_on_volume_error: true` (the CLI's --fail-on-volume-error) every shard job holding it exits 1.

The crash is real, not simulated: the batch's known label values for one volume are an int instead of a collection,
so building its value set raises TypeError inside standardize_batch's per-volume call.
"""

import json

import pytest

from cadsflow.labels import GROUP_IDS
from cadsflow.pseudolabel.__main__ import main as pseudolabel_main
from cadsflow.pseudolabel.infer import FAILED, QUARANTINED, predict_shard, read_report
from cadsflow.pseudolabel.postprocess import is_head_group
from cadsflow.sheet import Volume
from cadsflow.standardize import StandardizeSettings, standardize_batch, write_quarantine_table
from helpers import ct_array, spacing_affine, write_nifti

FAILED_REASON = "standardization failed: TypeError: 'int' object is not iterable"


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One batch: a good volume, a volume that crashes, a volume that fails validation (an MR-like image)."""
    root = tmp_path_factory.mktemp("failed_path")
    affine = spacing_affine((3.0, 3.0, 3.0))
    good = write_nifti(root / "in" / "good.nii.gz", ct_array(seed=1), affine)
    crash = write_nifti(root / "in" / "crash.nii.gz", ct_array(seed=2), affine)
    mr = write_nifti(root / "in" / "mr.nii.gz", ct_array(seed=3) + 2000, affine)  # no air: not HU
    volumes = [Volume("src_a", "src", good, "", "train_unlabelled"),
               Volume("src_b", "src", crash, "", "train_unlabelled"),
               Volume("src_c", "src", mr, "", "test")]
    known = {"src_a": None, "src_b": 3, "src_c": None}  # src_b: not a collection of values
    out = root / "standardized" / "src.0000"
    records = standardize_batch(volumes, out, known, StandardizeSettings())
    return root, out, records


def test_the_crashing_volume_is_recorded_failed_and_its_batch_mates_keep_their_results(batch):
    _, out, records = batch
    assert [(r["volume_id"], r["status"]) for r in records] == [
        ("src_a", "ok"), ("src_b", "failed"), ("src_c", "quarantined")]
    assert sorted(p.name for p in (out / "src_a").iterdir()) == ["image.nii.gz", "record.json"]
    assert sorted(p.name for p in (out / "src_b").iterdir()) == ["record.json"]
    assert sorted(p.name for p in (out / "src_c").iterdir()) == ["record.json"]


def test_the_failed_record_on_disk_names_the_exception_the_image_and_keeps_source_and_split(batch):
    root, out, _ = batch
    record = json.loads((out / "src_b" / "record.json").read_text())
    assert record["status"] == "failed"
    assert record["reason"] == FAILED_REASON
    assert record["file"] == str(root / "in" / "crash.nii.gz")
    assert (record["source"], record["split"]) == ("src", "train_unlabelled")


def test_the_quarantine_table_lists_the_failed_volume_with_its_reason_and_status(batch):
    root, out, _ = batch
    quarantine, status = root / "quarantine.tsv", root / "status.tsv"
    write_quarantine_table([out], quarantine, status)
    lines = quarantine.read_text().splitlines()
    assert lines[0] == "volume_id\tfile\treason"
    assert lines[1] == f"src_b\t{root / 'in' / 'crash.nii.gz'}\t{FAILED_REASON}"
    assert lines[2].startswith(f"src_c\t{root / 'in' / 'mr.nii.gz'}\t") and len(lines) == 3
    assert status.read_text().splitlines() == [
        "volume_id\tsource\tsplit\tstatus",
        "src_a\tsrc\ttrain_unlabelled\tok",
        "src_b\tsrc\ttrain_unlabelled\tfailed",
        "src_c\tsrc\ttest\tquarantined",
    ]


@pytest.mark.parametrize("group", GROUP_IDS)
def test_pseudolabeling_reports_the_failed_volume_failed_in_every_group_and_loads_no_model(batch, tmp_path, group):
    _, out, _ = batch
    brain_dir = tmp_path / "553"
    brain_dir.mkdir()
    report = predict_shard(tmp_path / "no_model", "all", [out / "src_b", out / "src_c"], tmp_path / str(group), group,
                           brain_dir=brain_dir if is_head_group(group) else None,
                           report_path=tmp_path / str(group) / "shard_0.tsv")
    assert report.model_loads == 0 and report.predicted == 0
    rows = read_report(tmp_path / str(group) / "shard_0.tsv")
    assert [(r.volume_id, r.status) for r in rows] == [("src_b", FAILED), ("src_c", QUARANTINED)]
    assert "src_b/record.json" in rows[0].reason and "'failed'" in rows[0].reason
    assert not list((tmp_path / str(group)).glob("*.nii.gz"))


def _shard_job(batch, tmp_path, group, *flags):
    """The pseudolabel_shard rule's command line (python -m cadsflow.pseudolabel), run in this process."""
    _, out, _ = batch
    marker = tmp_path / f"{group}.done"
    marker.write_text(json.dumps({"model_dir": str(tmp_path / "no_model"), "fold": "all"}))
    (tmp_path / "553").mkdir(exist_ok=True)
    brain = ["--brain-dir", str(tmp_path / "553")] if is_head_group(group) else []
    report = tmp_path / str(group) / "shard_0.tsv"
    code = pseudolabel_main(["--group", str(group), "--model", str(marker), "--volumes", str(out / "src_b"),
                             str(out / "src_c"), "--out-dir", str(tmp_path / str(group)), "--report", str(report),
                             "--threads", "1", "--log", str(tmp_path / "shard.log"), *brain, *flags])
    return code, read_report(report)


@pytest.mark.parametrize("group", GROUP_IDS)
def test_with_fail_on_volume_error_every_shard_job_holding_the_failed_volume_exits_1(batch, tmp_path, group):
    code, rows = _shard_job(batch, tmp_path, group, "--fail-on-volume-error")
    assert code == 1
    assert [(r.volume_id, r.status) for r in rows] == [("src_b", FAILED), ("src_c", QUARANTINED)]
    assert "volume src_b failed" in (tmp_path / "shard.log").read_text()


def test_without_fail_on_volume_error_the_shard_job_succeeds_and_reports_it(batch, tmp_path):
    code, rows = _shard_job(batch, tmp_path, 551)
    assert code == 0
    assert [(r.volume_id, r.status) for r in rows] == [("src_b", FAILED), ("src_c", QUARANTINED)]
