"""The second half's per-volume files as declared outputs (issue 17 item 4; cadsflow.layout): each job that writes
label maps declares its folder beside its report, and every reader of those maps takes the folders as inputs.

- flavor_validate / flavor_predict: results/flavors/predictions/<G>/validation/ and .../<G>/part_<p>/
  ({flavor}/{volume_id}.nii.gz), beside validation.tsv / part_<p>.tsv; head groups read group 553's (558: also
  552's) pseudo-label shard folders of the same volumes;
- flavor_scores reads the validation folder; assemble_batch the prediction jobs' folders of its volumes;
- assemble_batch: results/assembled/<G>/<batch>/ for every group, beside the batch's provenance table; the final
  datasets read their group's batch folders; the dataset card lists every map in files.tsv;
- final_predict: results/final/predictions/<G>/ (maps only), its report <G>.tsv beside; 557 and 558 read the
  final 553 folder.
"""

from __future__ import annotations

import pytest

GROUPS = range(551, 560)
DEMO_BATCHES = ("demo_hanseg.0000", "demo_kits.0000", "demo_newhead.0000", "demo_oar.0000", "demo_saros.0000",
                "demo_totalseg.0000", "demo_unlabelled.0000")


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    from workflow_runner import dry_run_jobs, snakemake, write_config

    root = tmp_path_factory.mktemp("folders_dag")
    targets = ["results/final/predictions/557.tsv", "results/final/predictions/558.tsv",
               "results/assembled/dataset_card/files.tsv", "results/ranking/priority.tsv"]
    config = write_config(root, pseudolabel={"shard_size": 8})  # 3 shards a group, as a part spans several
    proc = snakemake(root, *targets, "-n", "-p", config=config)
    assert not (root / "results").exists()  # a dry run writes nothing
    return dry_run_jobs(proc.stdout)


def _job(jobs, rule, output):
    return next(j for j in jobs[rule] if output in j["output"])


@pytest.mark.slow
def test_flavor_prediction_jobs_declare_their_folder_beside_their_report_and_write_into_it(jobs):
    assert len(jobs["flavor_validate"]) == 9 and len(jobs["flavor_predict"]) == 9  # demo: one part per group
    for job in jobs["flavor_validate"] + jobs["flavor_predict"]:
        report = job["output"][0]
        folder = report.removesuffix(".tsv")
        assert job["output"] == [report, folder] and folder.rsplit("/", 1)[1] in ("validation", "part_0")
        assert f"--out-root {folder} " in job["shell"]
    assert {j["output"][1] for j in jobs["flavor_validate"]} == {
        f"results/flavors/predictions/{g}/validation" for g in GROUPS}


@pytest.mark.slow
def test_head_flavor_jobs_read_the_553_and_552_pseudo_label_shard_folders(jobs):
    head = _job(jobs, "flavor_predict", "results/flavors/predictions/558/part_0")
    brain = [f"results/pseudolabels/553/shard_{k}" for k in range(3)]  # the demo part covers the 3 shards
    neck = [f"results/pseudolabels/552/shard_{k}" for k in range(3)]
    assert set(brain + neck) <= set(head["input"])
    assert f"--brain-dir {' '.join(brain)} --vertebrae-dir {' '.join(neck)} " in head["shell"]
    brain_only = _job(jobs, "flavor_validate", "results/flavors/predictions/557/validation")
    assert "--brain-dir results/pseudolabels/553/shard_" in brain_only["shell"]
    assert "--vertebrae-dir" not in brain_only["shell"]
    assert "--brain-dir" not in _job(jobs, "flavor_predict", "results/flavors/predictions/551/part_0")["shell"]


@pytest.mark.slow
def test_flavor_scores_read_the_validation_folder(jobs):
    job = _job(jobs, "flavor_scores", "results/ranking/scores/554.tsv")
    assert "results/flavors/predictions/554/validation" in job["input"]
    assert "--prediction-root results/flavors/predictions/554/validation " in job["shell"]


@pytest.mark.slow
def test_each_assembly_batch_declares_a_folder_per_group_and_reads_the_prediction_job_folders(jobs):
    assert len(jobs["assemble_batch"]) == len(DEMO_BATCHES)
    for job in jobs["assemble_batch"]:
        provenance = job["output"][0]
        batch = provenance.rsplit("/", 1)[1].removesuffix(".tsv")
        assert job["output"] == [provenance] + [f"results/assembled/{g}/{batch}" for g in GROUPS]
        assert f"--out-dir 'results/assembled/{{group}}/{batch}' " in job["shell"]  # quoted: {group} is literal
        read = {f for f in job["input"] if f.startswith("results/flavors/predictions/")}
        assert read and read <= {f"results/flavors/predictions/{g}/{j}" for g in GROUPS
                                 for j in ("validation", "part_0")}
        assert "--flavor-dir 551 GT results/flavors/predictions/551/" in job["shell"]
    card = jobs["dataset_card"][0]
    assert "results/assembled/dataset_card/files.tsv" in card["output"]
    assert "--maps-root results/assembled " in card["shell"]


@pytest.mark.slow
def test_final_datasets_read_their_groups_assembled_batch_folders(jobs):
    job = next(j for j in jobs["final_dataset"] if any("Dataset557_" in f for f in j["output"]))
    assembled = {f for f in job["input"] if f.startswith("results/assembled/") and "/provenance/" not in f}
    assert assembled and all(f.startswith("results/assembled/557/") for f in assembled)
    assert {f.rsplit("/", 1)[1] for f in assembled} <= set(DEMO_BATCHES)


@pytest.mark.slow
def test_final_predict_declares_the_groups_flat_folder_and_head_groups_read_the_final_553_folder(jobs):
    for group in (553, 557, 558):
        job = _job(jobs, "final_predict", f"results/final/predictions/{group}")
        assert job["output"] == [f"results/final/predictions/{group}.tsv", f"results/final/predictions/{group}"]
        assert f"--out-dir results/final/predictions/{group} " in job["shell"]
    head = _job(jobs, "final_predict", "results/final/predictions/558")
    assert {"results/final/predictions/553", "results/final/predictions/552"} <= set(head["input"])
    assert ("--brain-dir results/final/predictions/553 --vertebrae-dir results/final/predictions/552 "
            in head["shell"])
    assert "results/final/predictions/553" in _job(jobs, "final_predict", "results/final/predictions/557")["input"]
