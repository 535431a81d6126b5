"""What the real Snakefile asks the scheduler for under the paper preset, from a dry run (no job runs).

A small phantom cohort whose sources carry the paper's source names (config/group_training.yaml, preset paper:
totalsegmentator, visceral_gold_corpus, han_seg, saros) gives every group a specialist, so the dry run plans all
nine train_specialist and pseudolabel_shard jobs. The printed job resources must show the preset's GPU request
(config/presets.yaml, paper: gpus 1; Online Methods 6.1: one A100, 6 CPU cores, 120 GB per model) on exactly those
two GPU rules and on no CPU rule; under the smoke preset no job asks for a GPU. The shell commands show where the
inference device and the fail_on_volume_error switch reach the shard jobs.
"""

from __future__ import annotations

import re

import pytest
import yaml

from cadsflow.demo import build_demo_cohort
from cadsflow.specialists.presets import load_preset
from workflow_runner import snakemake, write_config

SMALL_COHORT = "tests/cluster/small_cohort.yaml"
PAPER_SOURCE_NAMES = {  # demo source -> the paper's source of the same role (config/group_training.yaml)
    "demo_totalseg": "totalsegmentator",
    "demo_oar": "visceral_gold_corpus",
    "demo_hanseg": "han_seg",
    "demo_saros": "saros",
}
GPU_RULES = {"train_specialist", "pseudolabel_shard"}  # the specialists' preset (config/presets.yaml)
SHAPE_QC_GPU_RULES = {"shape_qc_train", "shape_qc_score"}  # the shape prior's paper preset (config/shape_qc.yaml)
# the second half's trainings and predictions: flavors (config/flavors.yaml) and the final model (config/final.yaml)
MODEL_GPU_RULES = {"flavor_train", "flavor_validate", "flavor_predict", "final_train", "final_predict"}
GPU_KEYS = {"gpu", "gpu_model", "gres"}
GROUPS = [str(g) for g in range(551, 560)]
DRY_RUN_CORES = 64  # above every rule's threads, so the printed threads are the rules' own, not capped


def dry_run_jobs(text: str) -> list[dict]:
    """Each job block of `snakemake --dry-run --printshellcmds`: rule, wildcards, threads, resources, shell."""
    jobs: list[dict] = []
    job: dict | None = None
    for line in text.splitlines():
        head = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if head and not line.startswith(" "):
            job = {"rule": head.group(1), "wildcards": {}, "threads": 1, "resources": {}, "shell": ""}
            jobs.append(job)
            continue
        if job is None or not line.startswith("    "):
            if job is not None and line.strip() and not line.startswith("["):
                job["shell"] += line.strip() + "\n"  # --printshellcmds prints the command unindented
            continue
        key, _, value = line.strip().partition(": ")
        if key == "wildcards":
            job["wildcards"] = dict(pair.split("=", 1) for pair in value.split(", "))
        elif key == "threads":
            job["threads"] = int(value)
        elif key == "resources":
            job["resources"] = dict(pair.split("=", 1) for pair in value.split(", "))
    return jobs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The small phantom cohort of the cluster tests, its sources renamed to the paper's."""
    work = tmp_path_factory.mktemp("paper_dry_run")
    from helpers import REPO

    spec = yaml.safe_load((REPO / SMALL_COHORT).read_text())
    spec["sources"] = {PAPER_SOURCE_NAMES[name]: src for name, src in spec["sources"].items()}
    spec["sources"]["totalsegmentator"]["test_cases"] = ["case001"]  # a test volume: the final model predicts it
    (work / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    build_demo_cohort(work / "demo", work / "cohort.yaml")
    return work


def _dry_run(work, preset: str, **overrides) -> list[dict]:
    config = write_config(work, demo={"enabled": False, "directory": str(work / "demo")}, preset=preset, **overrides)
    proc = snakemake(work, "--dry-run", "--printshellcmds", "--cores", str(DRY_RUN_CORES), config=config,
                     timeout=300)
    jobs = dry_run_jobs(proc.stdout)
    assert jobs, proc.stdout[-3000:]
    return jobs


@pytest.fixture(scope="module")
def paper_jobs(workdir):
    return _dry_run(workdir, "paper")


def test_every_group_gets_a_training_and_a_shard_job_under_the_paper_preset(paper_jobs):
    for rule in GPU_RULES:
        assert sorted(j["wildcards"]["group"] for j in paper_jobs if j["rule"] == rule) == GROUPS, rule


@pytest.mark.parametrize("rule", sorted(GPU_RULES))
def test_gpu_rules_ask_for_the_paper_presets_gpu_cores_and_memory(paper_jobs, rule):
    paper = load_preset("paper")
    jobs = [j for j in paper_jobs if j["rule"] == rule]
    assert {j["resources"].get("gpu") for j in jobs} == {str(paper.gpus)} == {"1"}
    assert {j["threads"] for j in jobs} == {paper.threads} == {6}  # Online Methods 6.1: 6 CPU cores
    assert {j["resources"]["mem_mb"] for j in jobs} == {str(paper.mem_mb)} == {"120000"}
    assert all("gpu_model" not in j["resources"] for j in jobs)  # paper preset: gpu_model null, the site names it


def test_shape_prior_training_and_scoring_ask_for_one_gpu_under_the_paper_preset(paper_jobs):
    jobs = [j for j in paper_jobs if j["rule"] in SHAPE_QC_GPU_RULES]
    assert {j["rule"] for j in jobs} == SHAPE_QC_GPU_RULES
    assert {j["resources"].get("gpu") for j in jobs} == {"1"}


@pytest.mark.parametrize("rule", sorted(MODEL_GPU_RULES))
def test_flavor_and_final_trainings_and_predictions_ask_for_one_gpu_per_group_under_the_paper_preset(paper_jobs, rule):
    jobs = [j for j in paper_jobs if j["rule"] == rule]
    assert sorted({j["wildcards"]["group"] for j in jobs}) == GROUPS
    assert {j["resources"].get("gpu") for j in jobs} == {"1"}


def test_no_cpu_rule_of_the_paper_preset_asks_for_a_gpu(paper_jobs):
    cpu_jobs = [j for j in paper_jobs if j["rule"] not in GPU_RULES | SHAPE_QC_GPU_RULES | MODEL_GPU_RULES]
    assert {"standardize", "gt_batch", "gt_group_dataset", "plan_specialist", "pseudolabel_status",
            "shape_qc_exclude", "shape_qc_gallery", "flavor_images", "flavor_dataset", "flavor_scores",
            "rank_flavors", "assemble_batch", "dataset_card", "final_dataset"} <= {
        j["rule"] for j in cpu_jobs}
    assert [(j["rule"], k) for j in cpu_jobs for k in j["resources"] if k in GPU_KEYS] == []


def test_paper_training_and_shard_commands_run_on_cuda_with_the_paper_preset(paper_jobs):
    shards = [j["shell"] for j in paper_jobs if j["rule"] == "pseudolabel_shard"]
    trainings = [j["shell"] for j in paper_jobs if j["rule"] == "train_specialist"]
    assert len(shards) == 9 and all("--device cuda" in s and "--tile-step-size 0.5" in s for s in shards)
    assert len(trainings) == 9 and all("--preset paper" in s for s in trainings)
    assert not any("--fail-on-volume-error" in s for s in shards)  # config default: report, do not fail


def test_smoke_preset_asks_for_no_gpu_anywhere_and_fail_on_volume_error_reaches_every_shard(workdir):
    jobs = _dry_run(workdir, "smoke", pseudolabel={"fail_on_volume_error": True},
                    gt={"training_preset": "paper"})
    shards = [j for j in jobs if j["rule"] == "pseudolabel_shard"]
    assert len(shards) == 9
    assert [(j["rule"], k) for j in jobs for k in j["resources"] if k in GPU_KEYS] == []
    assert all("--fail-on-volume-error" in j["shell"] and "--device cpu" in j["shell"] for j in shards)
