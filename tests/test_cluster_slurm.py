"""Cluster execution on a real SLURM: the toy DAG in tests/cluster/toy/ and the real CADS DAG go through sbatch with
profiles/slurm-ci.

Toy DAG: the tests check SLURM's own records of the jobs, that a failing job fails cleanly and a rerun redoes only it
and its dependents, that a job cancelled with scancel leaves finished outputs alone and is redone, that --forcerun /
--until rerun a single stage, that a GPU rule gets a GPU from SLURM while CPU rules do not, and that the production
profile (profiles/slurm) submits once its site placeholders are replaced.

Real DAG (the repository's Snakefile on the small phantom cohort tests/cluster/small_cohort.yaml, to the quarantine
table and the gt batches): every job Snakemake planned was one completed SLURM job, outputs are RAS at 1.5 mm, and a
volume made unreadable after the run is quarantined on rerun while its batch-mate and the other batches keep their
results.

Needs the local cluster: tests/cluster/slurm-up.sh (root). Without one every test here is skipped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))

from cluster_fixtures import (  # noqa: E402
    CI_PROFILE,
    REPO_ROOT,
    SlurmCluster,
    planned_jobs,
    run_snakemake,
    slurm_cluster,  # noqa: F401  (fixture)
    slurm_logs,
    start_snakemake,
    wait_for_path,
)
from workflow_runner import write_config  # noqa: E402

from cadsflow.demo import build_demo_cohort  # noqa: E402

pytestmark = pytest.mark.cluster

TOY_SNAKEFILE = Path(__file__).resolve().parent / "cluster" / "toy" / "Snakefile"
PRODUCTION_PROFILE = REPO_ROOT / "profiles" / "slurm"
SAMPLES = ("a", "b", "c")

# every output of the toy DAG, by the rule that writes it
OUTPUTS = {
    "manifest": ["results/manifest.txt"],
    "prepare": [f"results/prepared/{s}.txt" for s in SAMPLES],
    "measure": [f"results/measured/{s}.txt" for s in SAMPLES],
    "train": ["results/model.txt"],
    "summarize": ["results/summary.txt"],
}
ALL_OUTPUTS = [path for paths in OUTPUTS.values() for path in paths]


# --- the toy workflow -------------------------------------------------------------------------------------------


def make_toy_workdir(root: Path) -> Path:
    """A fresh working directory with the toy Snakefile and one input per sample."""
    workdir = root / "work"
    (workdir / "inputs").mkdir(parents=True)
    shutil.copy(TOY_SNAKEFILE, workdir / "Snakefile")
    for sample in SAMPLES:
        (workdir / "inputs" / f"{sample}.txt").write_text(f"{sample}\n")
    return workdir


def slurm_job_of(workdir: Path, output: str) -> str:
    """The SLURM job id the toy job that wrote `output` ran under (line 1 of the output)."""
    return (workdir / output).read_text().splitlines()[0]


def gpus_seen_by(workdir: Path, output: str) -> str:
    """CUDA_VISIBLE_DEVICES inside the job that wrote `output` ('none' when SLURM bound no GPU)."""
    return (workdir / output).read_text().splitlines()[1].removeprefix("gpus=")


def fingerprint(workdir: Path, outputs: list[str]) -> dict[str, tuple[str, int]]:
    """Output -> (SLURM job id that wrote it, modification time): changes if and only if it was rewritten."""
    return {out: (slurm_job_of(workdir, out), (workdir / out).stat().st_mtime_ns) for out in outputs}


@pytest.fixture(scope="module")
def cluster_with_a_gpu(slurm_cluster: SlurmCluster) -> None:
    """The toy DAG has a GPU rule: without a GPU in the cluster it would fail at sbatch (no gpu partition)."""
    if slurm_cluster.gpus_on_nodes() == 0:
        pytest.skip("the cluster declares no GPU (slurm-up.sh declares one unless SLURM_CI_GPUS=0)")


@pytest.fixture(scope="module")
def toy_run(slurm_cluster: SlurmCluster, cluster_with_a_gpu, tmp_path_factory: pytest.TempPathFactory):
    """The toy DAG run once to the end on SLURM; tests that change things work on a copy (`copy_of_toy_run`)."""
    workdir = make_toy_workdir(tmp_path_factory.mktemp("toy-run"))
    run = run_snakemake(workdir)
    assert run.returncode == 0, run.explain()
    return workdir, run


@pytest.fixture
def copy_of_toy_run(toy_run, tmp_path: Path) -> Path:
    """A private copy of the finished toy run, Snakemake's metadata and modification times included."""
    workdir, _ = toy_run
    copy = tmp_path / "work"
    shutil.copytree(workdir, copy, symlinks=True)
    return copy


# --- jobs go through SLURM ----------------------------------------------------------------------------------------


def test_every_output_was_written_by_a_slurm_job_that_completed_in_the_workdir(slurm_cluster, toy_run):
    workdir, _ = toy_run
    for output in ALL_OUTPUTS:
        record = slurm_cluster.finished_job(slurm_job_of(workdir, output))
        assert (record["JobState"], record["WorkDir"]) == ("COMPLETED", str(workdir)), output


def test_group_members_share_one_slurm_job_per_sample_and_nothing_else_does(toy_run):
    workdir, run = toy_run
    per_sample = {s: {slurm_job_of(workdir, f"results/{d}/{s}.txt") for d in ("prepared", "measured")} for s in SAMPLES}
    assert all(len(ids) == 1 for ids in per_sample.values()), per_sample
    jobs = [slurm_job_of(workdir, OUTPUTS[rule][0]) for rule in ("manifest", "train", "summarize")]
    jobs += [ids.pop() for ids in per_sample.values()]
    # manifest, train, summarize and one job per sample: six distinct SLURM jobs, exactly those submitted
    assert sorted(jobs) == sorted(set(jobs)) == sorted(run.submitted_jobs())


def test_the_plugin_keeps_one_log_per_slurm_job_named_after_its_rule_or_group(toy_run):
    workdir, _ = toy_run
    logs = slurm_logs(workdir)
    expected_dir = {
        slurm_job_of(workdir, "results/manifest.txt"): "rule_manifest",
        slurm_job_of(workdir, "results/model.txt"): "rule_train",
        slurm_job_of(workdir, "results/summary.txt"): "rule_summarize",
    }
    expected_dir |= {slurm_job_of(workdir, f"results/measured/{s}.txt"): "group_per_sample" for s in SAMPLES}
    assert sorted(logs) == sorted(expected_dir)
    for job_id, log in logs.items():
        top = log.relative_to(workdir / "logs" / "slurm").parts[0]
        assert top.startswith(expected_dir[job_id]), (job_id, log)


def test_gpu_rule_runs_on_the_gpu_partition_with_a_gpu_and_cpu_rules_without(slurm_cluster, toy_run):
    workdir, _ = toy_run
    train = slurm_cluster.job(slurm_job_of(workdir, "results/model.txt"))
    assert (train["Partition"], train.get("TresPerJob")) == ("gpu", "gres:gpu:1")
    assert gpus_seen_by(workdir, "results/model.txt") != "none"
    for output in ALL_OUTPUTS:
        if output != "results/model.txt":
            job = slurm_cluster.job(slurm_job_of(workdir, output))
            assert (job["Partition"], "TresPerJob" in job, gpus_seen_by(workdir, output)) == ("debug", False, "none")


# --- failure and rerun ------------------------------------------------------------------------------------------------


def test_failed_job_fails_cleanly_and_rerun_after_fix_runs_only_it_and_its_dependents(slurm_cluster, copy_of_toy_run):
    workdir = copy_of_toy_run
    (workdir / "inputs" / "b.txt").write_text("FAIL\n")  # newer input: prepare[b] reruns, and now fails
    untouched = [o for o in ALL_OUTPUTS if "/b.txt" not in o]
    before = fingerprint(workdir, untouched)

    failed = run_snakemake(workdir)

    assert failed.returncode != 0, failed.explain()
    states = slurm_cluster.final_states(failed.submitted_jobs())
    [failed_job] = [job for job, state in states.items() if state != "COMPLETED"]
    assert states[failed_job] == "FAILED"
    failed_log = failed.submitted_jobs()[failed_job]
    assert f"log: {failed_log}" in failed.output  # Snakemake points at the failed SLURM job's log ...
    assert "refusing inputs/b.txt" in failed_log.read_text()  # ... which is kept and says why
    assert [o for o in ALL_OUTPUTS if (workdir / o).exists()] == untouched  # the failed group's outputs are gone
    assert fingerprint(workdir, untouched) == before

    (workdir / "inputs" / "b.txt").write_text("b\n")
    assert planned_jobs(workdir) == {"prepare": 1, "measure": 1, "summarize": 1, "all": 1}
    rerun = run_snakemake(workdir)

    assert rerun.returncode == 0, rerun.explain()
    redone = [o for o in ALL_OUTPUTS if "/b.txt" in o or o == "results/summary.txt"]
    # the group job of sample b (prepare and measure), then summarize: nothing else went to SLURM
    assert {slurm_job_of(workdir, o) for o in redone} == set(rerun.submitted_jobs())
    kept = [o for o in untouched if o != "results/summary.txt"]
    assert fingerprint(workdir, kept) == {o: before[o] for o in kept}


def test_scancel_of_a_running_job_keeps_finished_outputs_and_rerun_redoes_only_that_job(slurm_cluster, copy_of_toy_run):
    workdir = copy_of_toy_run
    (workdir / "hold").mkdir()
    (workdir / "hold" / "c").touch()  # measure[c] waits while this exists
    upstream = [o for o in ALL_OUTPUTS if o not in OUTPUTS["measure"] + OUTPUTS["summarize"]]
    before = fingerprint(workdir, upstream)

    background = start_snakemake(workdir, "--forcerun", "measure")
    try:
        wait_for_path(workdir / "running" / "c", background)
        held_job = (workdir / "running" / "c").read_text().strip()
        slurm_cluster.cancel(held_job)
        cancelled = background.wait()
    finally:
        background.interrupt()

    assert cancelled.returncode != 0, cancelled.explain()
    states = slurm_cluster.final_states(cancelled.submitted_jobs())
    assert {job: state for job, state in states.items() if state != "COMPLETED"} == {held_job: "CANCELLED"}
    assert not (workdir / "results" / "measured" / "c.txt").exists()
    finished = [f"results/measured/{s}.txt" for s in ("a", "b")]  # ran beside the cancelled job, to the end
    assert {slurm_job_of(workdir, o) for o in finished} <= set(cancelled.submitted_jobs())
    assert fingerprint(workdir, upstream) == before
    after_cancel = fingerprint(workdir, upstream + finished)

    (workdir / "hold" / "c").unlink()
    assert planned_jobs(workdir) == {"measure": 1, "summarize": 1, "all": 1}
    rerun = run_snakemake(workdir)

    assert rerun.returncode == 0, rerun.explain()
    assert fingerprint(workdir, upstream + finished) == after_cancel
    redone = {slurm_job_of(workdir, o) for o in ("results/measured/c.txt", "results/summary.txt")}
    assert redone == set(rerun.submitted_jobs())


# --- rerunning one stage ----------------------------------------------------------------------------------------------


def test_forcerun_until_reruns_exactly_one_stage_and_leaves_the_rest(copy_of_toy_run):
    workdir = copy_of_toy_run
    assert planned_jobs(workdir, "--forcerun", "summarize") == {"summarize": 1, "all": 1}
    assert planned_jobs(workdir, "--forcerun", "measure", "--until", "measure") == {"measure": 3}
    others = [o for o in ALL_OUTPUTS if o not in OUTPUTS["measure"]]
    before = fingerprint(workdir, others)

    run = run_snakemake(workdir, "--forcerun", "measure", "--until", "measure")

    assert run.returncode == 0, run.explain()
    assert fingerprint(workdir, others) == before
    assert sorted(slurm_job_of(workdir, o) for o in OUTPUTS["measure"]) == sorted(run.submitted_jobs())
    # --until stopped there: summarize is now out of date, and nothing else is
    assert planned_jobs(workdir) == {"summarize": 1, "all": 1}


# --- the production profile -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("cluster_with_a_gpu")
def test_production_profile_submits_once_its_site_placeholders_are_replaced(slurm_cluster, tmp_path):
    workdir = make_toy_workdir(tmp_path)
    site = [  # what a site sets instead of the CHANGE_ME_* values of profiles/slurm
        "--default-resources",
        "mem_mb=200",
        "runtime=10",  # replaces the mapping, slurm_account=CHANGE_ME_... too
        "--slurm-partition-config",
        str(CI_PROFILE / "partitions.yaml"),
        "--slurm-init-seconds-before-status-checks",
        "3",  # only to keep the test short
    ]
    if not slurm_cluster.accounting_works():  # the profile's sacct needs slurmdbd (SLURM_CI_ACCOUNTING=dbd)
        site += ["--slurm-status-command", "squeue"]

    run = run_snakemake(workdir, *site, "results/model.txt", profile=PRODUCTION_PROFILE)

    assert run.returncode == 0, run.explain()
    train = slurm_cluster.job(slurm_job_of(workdir, "results/model.txt"))
    assert (train["Partition"], train.get("TresPerJob"), train["Requeue"]) == ("gpu", "gres:gpu:1", "1")
    assert slurm_logs(workdir) == {}  # unlike profiles/slurm-ci, logs of successful jobs are not kept


# --- the real CADS DAG ------------------------------------------------------------------------------------------------
# The repository's Snakefile on tests/cluster/small_cohort.yaml (5 phantom volumes, 4 sources, one batch each), to the
# quarantine table and the gt batches: standardize, gt_phantom_atlas, gt_batch, quarantine_table. No nnU-Net.

CADS_SNAKEFILE = REPO_ROOT / "Snakefile"
SMALL_COHORT = Path(__file__).resolve().parent / "cluster" / "small_cohort.yaml"
CADS_BATCHES = ("demo_totalseg.0000", "demo_oar.0000", "demo_hanseg.0000", "demo_saros.0000")
CADS_TARGETS = ("results/quarantine/quarantine.tsv", *(f"results/gt/{batch}" for batch in CADS_BATCHES))
# every SLURM job the first run must make: (rule, wildcards as the plugin names its log folder)
CADS_JOBS = {  # submitted to SLURM, one sbatch each
    *(("standardize", batch) for batch in CADS_BATCHES),
    *(("gt_batch", batch) for batch in CADS_BATCHES),
}
# localrules (Snakefile): seconds of work over the cohort, run on the login node instead of a submission each.
# demo_hanseg trains group 557 by atlas registration, so the phantom atlas is drawn.
CADS_LOCAL_JOBS = ["gt_phantom_atlas", "quarantine_table"]
TRUNCATED = "demo_totalseg_case001"  # its image is cut to a third after the first run
TRUNCATED_BATCH = "demo_totalseg.0000"
BATCH_MATE = "demo_totalseg_case000"
OTHER_BATCHES = [batch for batch in CADS_BATCHES if batch != TRUNCATED_BATCH]


def make_cads_workdir(root: Path) -> Path:
    """A working directory with the small cohort rendered under demo/ and a config that points at it."""
    workdir = root / "work"
    workdir.mkdir(parents=True)
    spec = shutil.copy(SMALL_COHORT, workdir / "cohort.yaml")
    build_demo_cohort(workdir / "demo", spec)
    write_config(workdir, demo={"enabled": False, "directory": str(workdir / "demo")})
    return workdir


def run_cads(workdir: Path):
    """The real DAG to CADS_TARGETS through profiles/slurm-ci."""
    config = str(workdir / "test_config.yaml")  # --configfile last: it takes several values
    return run_snakemake(workdir, *CADS_TARGETS, "--configfile", config, snakefile=CADS_SNAKEFILE)


def cads_volume_status(workdir: Path) -> dict[str, tuple[str, str]]:
    """Volume id -> (its batch, its status: ok, quarantined, failed) from results/quarantine/status.tsv."""
    rows = (workdir / "results" / "quarantine" / "status.tsv").read_text().splitlines()[1:]
    cells = [row.split("\t") for row in rows]  # volume_id, source, split, status
    return {volume_id: (f"{source}.0000", status) for volume_id, source, _, status in cells}


def file_fingerprints(workdir: Path, folders: list[str]) -> dict[str, tuple[str, int]]:
    """Every file under the folders -> (content hash, modification time): changes if and only if it was rewritten."""
    return {
        str(path.relative_to(workdir)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for folder in folders
        for path in sorted((workdir / folder).rglob("*"))
        if path.is_file()
    }


def voxels_of(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """NIfTI file name -> (voxel array, affine) for every .nii.gz directly in `folder`."""
    return {p.name: (np.asarray(nib.load(p).dataobj), nib.load(p).affine) for p in sorted(folder.glob("*.nii.gz"))}


def assert_all_completed_in(slurm_cluster: SlurmCluster, workdir: Path, job_ids) -> None:
    records = {job_id: slurm_cluster.finished_job(job_id) for job_id in job_ids}
    assert {job: (r["JobState"], r["WorkDir"]) for job, r in records.items()} == {
        job: ("COMPLETED", str(workdir)) for job in job_ids
    }


@pytest.fixture(scope="module")
def cads_run(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory):
    """The real DAG run once on SLURM; its outputs stay as they are until `cads_rerun_after_truncation`."""
    workdir = make_cads_workdir(tmp_path_factory.mktemp("cads-run"))
    run = run_cads(workdir)
    assert run.returncode == 0, run.explain()
    return workdir, run


@pytest.fixture(scope="module")
def cads_rerun_after_truncation(cads_run):
    """After the first run: cut one image to a third (newer than every output: its batch is out of date), take a
    snapshot of what must survive, rerun the same targets."""
    workdir, _ = cads_run
    others = [f"results/{stage}/{batch}" for stage in ("standardized", "gt") for batch in OTHER_BATCHES]
    before = {
        "others": file_fingerprints(workdir, others),
        "mate_standardized": voxels_of(workdir / "results" / "standardized" / TRUNCATED_BATCH / BATCH_MATE),
        "mate_gt": voxels_of(workdir / "results" / "gt" / TRUNCATED_BATCH / BATCH_MATE),
    }
    assert before["mate_standardized"] and before["mate_gt"]
    image = workdir / "demo" / "demo_totalseg" / "images" / "case001.nii.gz"
    raw = image.read_bytes()
    image.write_bytes(raw[: len(raw) // 3])
    rerun = run_cads(workdir)
    return workdir, before, rerun, others


def test_real_dag_every_planned_job_was_one_completed_slurm_job_named_after_its_rule_and_batch(slurm_cluster, cads_run):
    workdir, run = cads_run
    jobs = run.submitted_by_rule(workdir)
    assert sorted(jobs.values()) == sorted(CADS_JOBS)  # one sbatch per rule and batch, none twice
    local = sorted(run.ran_locally())
    assert local == CADS_LOCAL_JOBS  # only the cohort aggregations ran on the login node
    planned = Counter(rule for rule, _ in jobs.values()) + Counter(local)
    assert planned == run.job_stats()  # = what Snakemake planned, job for job
    assert all(log.is_file() for log in run.submitted_jobs().values())  # the plugin kept each job's log
    assert_all_completed_in(slurm_cluster, workdir, jobs)


def test_real_dag_standardized_volumes_and_gt_maps_are_ras_at_1_5_mm(cads_run):
    workdir, _ = cads_run
    status = cads_volume_status(workdir)
    ok = {volume_id: batch for volume_id, (batch, state) in status.items() if state == "ok"}
    # all five, or four once the truncation rerun below has quarantined one
    assert len(status) == 5 and set(ok) >= set(status) - {TRUNCATED}
    files = []
    for volume_id, batch in ok.items():
        standardized = workdir / "results" / "standardized" / batch / volume_id
        group_maps = sorted((workdir / "results" / "gt" / batch / volume_id).glob("group_*.nii.gz"))
        assert group_maps, volume_id  # every cohort volume is labelled in some group
        files += [standardized / "image.nii.gz", standardized / "label.nii.gz", *group_maps]
    for path in files:  # the sources are stored LPS or RAS at 3 mm
        img = nib.load(path)
        geometry = (nib.aff2axcodes(img.affine), tuple(float(z) for z in img.header.get_zooms()[:3]))
        assert geometry == (("R", "A", "S"), (1.5, 1.5, 1.5)), path


def test_truncated_volume_reruns_only_its_batch_as_slurm_jobs_and_the_quarantine_table_locally(
    slurm_cluster, cads_rerun_after_truncation
):
    workdir, _, rerun, _ = cads_rerun_after_truncation
    assert rerun.returncode == 0, rerun.explain()  # a bad volume is quarantined, not a failed job
    jobs = rerun.submitted_by_rule(workdir)
    redone = {("standardize", TRUNCATED_BATCH), ("gt_batch", TRUNCATED_BATCH)}
    assert sorted(jobs.values()) == sorted(redone)
    assert rerun.ran_locally() == ["quarantine_table"]  # a localrule: the login node redoes the table
    assert Counter(rule for rule, _ in jobs.values()) + Counter(["quarantine_table"]) == rerun.job_stats()
    assert_all_completed_in(slurm_cluster, workdir, jobs)


def test_truncated_volume_becomes_the_only_quarantine_line_and_gets_no_ground_truth(cads_rerun_after_truncation):
    workdir, _, rerun, _ = cads_rerun_after_truncation
    assert rerun.returncode == 0, rerun.explain()
    lines = (workdir / "results" / "quarantine" / "quarantine.tsv").read_text().splitlines()
    assert lines[0] == "volume_id\tfile\treason"
    [(volume_id, file, reason)] = [tuple(line.split("\t")) for line in lines[1:]]
    assert (volume_id, Path(file).name, "unreadable" in reason) == (TRUNCATED, "case001.nii.gz", True), reason
    assert cads_volume_status(workdir)[TRUNCATED] == (TRUNCATED_BATCH, "quarantined")
    gt = workdir / "results" / "gt" / TRUNCATED_BATCH / TRUNCATED
    assert sorted(p.name for p in gt.iterdir()) == ["record.json"]  # no group maps, only a record saying why
    record = json.loads((gt / "record.json").read_text())
    assert (record["status"], "quarantined" in record["reason"]) == ("skipped", True), record
    assert not (workdir / "results" / "standardized" / TRUNCATED_BATCH / TRUNCATED / "image.nii.gz").exists()


def test_truncated_volumes_batch_mate_keeps_identical_results_and_other_batches_are_not_rewritten(
    cads_rerun_after_truncation,
):
    workdir, before, rerun, others = cads_rerun_after_truncation
    assert rerun.returncode == 0, rerun.explain()
    assert cads_volume_status(workdir)[BATCH_MATE] == (TRUNCATED_BATCH, "ok")
    # its batch's folders were written again (one job per batch), with the same voxels and affines
    after_std = voxels_of(workdir / "results" / "standardized" / TRUNCATED_BATCH / BATCH_MATE)
    after_gt = voxels_of(workdir / "results" / "gt" / TRUNCATED_BATCH / BATCH_MATE)
    for after, was in ((after_std, before["mate_standardized"]), (after_gt, before["mate_gt"])):
        assert sorted(after) == sorted(was)
        for name, (data, affine) in was.items():
            assert np.array_equal(after[name][0], data) and np.array_equal(after[name][1], affine), name
    # the other batches: not a file rewritten
    assert file_fingerprints(workdir, others) == before["others"]
