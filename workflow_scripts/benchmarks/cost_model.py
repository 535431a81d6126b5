"""What the full factory costs on a cluster: CPU-hours, GPU-hours and wall-clock per stage, for planning allocations.

Job counts come from a dry run of the real Snakefile on a synthetic 22,022-volume sheet over the 40 registry sources
(workflow_scripts/benchmarks/bench_scale.py writes it; paper preset). Per-job costs come from three kinds of origin, each printed:

- measured: CPU stages' seconds per volume in a finished demo run (its benchmark: and log: files, read like
  bench_demo_stages.py does), scaled by voxel count from a demo volume to a clinical volume at 1.5 mm
  (--clinical-voxels; default 300 x 300 x 300: a 45 cm cube, a torso-to-whole-body field of view);
- paper: Online Methods 6.1 (9 h of nnU-Net preprocessing for 22,000 images on 6 cores; 83-161 h per 1,000-epoch
  training on one A100);
- assumed: figures the paper does not give (GPU seconds per prediction), flagged as such and settable.

A measured GPU run can replace the paper's or assumed figures (--gpu-train-hours, --gpu-seconds-per-prediction).
Usage: python workflow_scripts/benchmarks/cost_model.py [--run-dir .] [--gpus 8] [--cpus 512] [--volumes 22022]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_demo_stages import _sheet_ids, prediction_seconds, read_jobs  # noqa: E402
from bench_scale import REGISTRY, SNAKEMAKE, dry_run, write_sheet  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO_VOXELS = 96 * 75 * 160  # median standardized demo volume (1.5 mm), see the demo's standardize logs
PAPER_PREPROCESS_CPU_H_PER_IMAGE = 9.0 * 6 / 22000  # Online Methods 6.1: ~9 h for 22,000 images on 6 cores
PAPER_TRAIN_HOURS = (83.0, 161.0)  # Online Methods 6.1: 1,000 epochs on one A100
LABELLED_SHARE = 0.21  # Online Methods 2.1: 21% of the collection carries labels
TEST_SHARE = 0.034  # 745 test cases (../shared/data/cads_test_split) of 22,022


@dataclass
class Stage:
    rule: str
    kind: str  # cpu | gpu
    origin: str
    per_job_hours: float
    jobs: int

    @property
    def hours(self) -> float:
        return self.per_job_hours * self.jobs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=".", help="a finished demo run (benchmarks/, logs/) for CPU costs")
    parser.add_argument("--sheet", default="resources/demo/volumes.tsv", help="that run's sheet")
    parser.add_argument("--volumes", type=int, default=22022)
    parser.add_argument("--clinical-voxels", type=float, default=300.0 ** 3)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs available at once")
    parser.add_argument("--cpus", type=int, default=512, help="CPU cores available at once")
    parser.add_argument("--gpu-train-hours", type=float, default=None,
                        help="hours per 1,000-epoch training measured on your GPU (default: the paper's 83-161 h)")
    parser.add_argument("--gpu-seconds-per-prediction", type=float, default=30.0,
                        help="ASSUMED GPU seconds per volume and group at 1.5 mm, tile step 0.5 (paper gives none)")
    parser.add_argument("--shape-prior-train-hours", type=float, default=24.0,
                        help="ASSUMED GPU hours to train one group's shape prior (paper gives none)")
    parser.add_argument("--gpu-seconds-per-shape-score", type=float, default=20.0,
                        help="ASSUMED GPU seconds to reconstruct and score one pseudo-label (1,200 latent steps)")
    args = parser.parse_args(argv)

    counts = dry_run_counts(args.volumes)
    scale = args.clinical_voxels / DEMO_VOXELS
    demo = demo_seconds_per_volume(Path(args.run_dir), Path(args.run_dir) / args.sheet)
    stages = build_stages(counts, demo, scale, args)
    print(f"{args.volumes} volumes, paper preset; CPU per-volume costs scaled x{scale:.1f} by voxels "
          f"({DEMO_VOXELS / 1e6:.1f} M demo -> {args.clinical_voxels / 1e6:.1f} M clinical)")
    print(f"{'rule':<28}{'jobs':>7}{'CPU-h':>10}{'GPU-h':>10}{'wall h':>9}  origin")
    total_cpu = total_gpu = total_wall = 0.0
    for s in stages:
        slots = args.gpus if s.kind == "gpu" else args.cpus
        wall = math.ceil(s.jobs / min(slots, s.jobs)) * s.per_job_hours if s.jobs else 0.0
        cpu, gpu = (s.hours, 0.0) if s.kind == "cpu" else (0.0, s.hours)
        total_cpu, total_gpu, total_wall = total_cpu + cpu, total_gpu + gpu, total_wall + wall
        print(f"{s.rule:<28}{s.jobs:>7}{cpu:>10.1f}{gpu:>10.1f}{wall:>9.1f}  {s.origin}")
    print(f"{'total':<28}{sum(s.jobs for s in stages):>7}{total_cpu:>10.1f}{total_gpu:>10.1f}{total_wall:>9.1f}"
          f"  (stages run one after another; wall at {args.gpus} GPUs and {args.cpus} cores)")
    unknown = sorted(set(counts) - {s.rule for s in stages} - {"all"})
    if unknown:
        print(f"rules without a cost figure (aggregations, minutes each): {', '.join(unknown)}")
    return 0


def dry_run_counts(volumes: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sheet = tmp / "volumes.tsv"
        write_sheet(sheet, volumes)
        cfg = tmp / "scale.yaml"
        cfg.write_text(f"sheet: {sheet}\nregistry: {REGISTRY}\npreset: paper\n"
                       f"demo: {{enabled: false, directory: {tmp / 'demo'}}}\n")
        cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(tmp), "-n", "--quiet", "rules",
               "--configfile", str(cfg)]
        return dry_run(cmd)[2]


def demo_seconds_per_volume(run_dir: Path, sheet: Path) -> dict[str, float]:
    """Median seconds per volume of each per-volume CPU step of a finished demo run."""
    ids = _sheet_ids(sheet)
    per_step: dict[str, list[float]] = {}
    for job in read_jobs(run_dir, ids) if (run_dir / "benchmarks").is_dir() else []:
        if job["volumes"]:
            per_step.setdefault(job["step"], []).append(job["s"] / job["volumes"])
    medians = {step: statistics.median(v) for step, v in per_step.items()}
    predictions = prediction_seconds(run_dir / "logs" / "pseudolabel")
    if predictions:
        medians["prediction"] = statistics.median(predictions)
    return medians


def build_stages(counts: dict[str, int], demo: dict[str, float], scale: float, args) -> list[Stage]:
    n = args.volumes
    stages = []

    def cpu_per_volume(rule, step, volumes_total):
        jobs = counts.get(rule, 0)
        if not jobs:
            return
        if step in demo:
            seconds = demo[step] * scale
            origin = f"measured: demo {demo[step]:.2f} s/volume x {scale:.1f}"
        else:
            seconds, origin = 60.0, "assumed: 60 s/volume (no demo run given)"
        stages.append(Stage(rule, "cpu", origin, seconds * volumes_total / jobs / 3600, jobs))

    cpu_per_volume("standardize", "standardize", n)
    cpu_per_volume("gt_batch", "gt", n * LABELLED_SHARE)
    cpu_per_volume("evaluate_batch", "evaluation", n * TEST_SHARE)
    if counts.get("plan_specialist"):
        jobs = counts["plan_specialist"]
        per_job = PAPER_PREPROCESS_CPU_H_PER_IMAGE * n * LABELLED_SHARE / jobs
        stages.append(Stage("plan_specialist", "cpu", "paper: 9 h x 6 cores per 22,000 images, GT images only",
                            per_job, jobs))
    if counts.get("train_specialist"):
        low, high = PAPER_TRAIN_HOURS
        hours = args.gpu_train_hours or (low + high) / 2
        origin = (f"measured: {hours:.0f} h per training" if args.gpu_train_hours
                  else f"paper: 1,000 epochs in {low:.0f}-{high:.0f} h on one A100 (mid {hours:.0f} h)")
        stages.append(Stage("train_specialist", "gpu", origin, hours, counts["train_specialist"]))
    if counts.get("pseudolabel_shard"):
        jobs = counts["pseudolabel_shard"]
        predictions = 9 * n
        stages.append(Stage("pseudolabel_shard", "gpu",
                            f"assumed: {args.gpu_seconds_per_prediction:.0f} GPU-s per volume and group",
                            args.gpu_seconds_per_prediction * predictions / jobs / 3600, jobs))
    if counts.get("shape_qc_train"):
        stages.append(Stage("shape_qc_train", "gpu", f"assumed: {args.shape_prior_train_hours:.0f} GPU-h per prior",
                            args.shape_prior_train_hours, counts["shape_qc_train"]))
    if counts.get("shape_qc_score"):
        jobs = counts["shape_qc_score"]
        stages.append(Stage("shape_qc_score", "gpu",
                            f"assumed: {args.gpu_seconds_per_shape_score:.0f} GPU-s per pseudo-label",
                            args.gpu_seconds_per_shape_score * 9 * n / jobs / 3600, jobs))
    _second_half(stages, counts, cpu_per_volume, args)
    return stages


FLAVOR_EPOCHS, NNUNET_EPOCHS = 200, 1000  # Online Methods 6.1: flavors 200 epochs; the final model nnU-Net's 1,000
N_FLAVORS = 3


def _second_half(stages, counts, cpu_per_volume, args) -> None:
    """Flavors, their predictions and ranking, assembly and the final model (issues 12-14)."""
    n = args.volumes
    non_test = n * (1 - TEST_SHARE)
    low, high = PAPER_TRAIN_HOURS
    train_hours = args.gpu_train_hours or (low + high) / 2
    predict_s = args.gpu_seconds_per_prediction
    cpu_per_volume("flavor_images", "flavor images", n)
    if counts.get("flavor_dataset"):  # nnU-Net preprocessing of GT (labelled) + Pseudo + Shape (non-test) sets
        jobs = counts["flavor_dataset"]
        images = 9 * (n * LABELLED_SHARE + 2 * non_test)
        stages.append(Stage("flavor_dataset", "cpu", "paper: 9 h x 6 cores per 22,000 images, per flavor dataset",
                            PAPER_PREPROCESS_CPU_H_PER_IMAGE * images / jobs, jobs))
    if counts.get("flavor_train"):
        hours = train_hours * FLAVOR_EPOCHS / NNUNET_EPOCHS
        stages.append(Stage("flavor_train", "gpu", f"scaled: {FLAVOR_EPOCHS} of {NNUNET_EPOCHS} epochs of "
                            f"{train_hours:.0f} h (the paper gives no flavor time)", hours, counts["flavor_train"]))
    if counts.get("flavor_validate"):
        jobs = counts["flavor_validate"]
        stages.append(Stage("flavor_validate", "gpu", f"assumed: {predict_s:.0f} GPU-s x 3 flavors x test volumes",
                            predict_s * N_FLAVORS * 9 * n * TEST_SHARE / jobs / 3600, jobs))
    if counts.get("flavor_predict"):
        jobs = counts["flavor_predict"]
        stages.append(Stage("flavor_predict", "gpu", f"assumed: {predict_s:.0f} GPU-s x 3 flavors (upper bound: "
                            "every flavor first somewhere) x non-test volumes",
                            predict_s * N_FLAVORS * 9 * non_test / jobs / 3600, jobs))
    cpu_per_volume("flavor_scores", "flavor scores", 9 * N_FLAVORS * n * TEST_SHARE)
    cpu_per_volume("assemble_batch", "assembly", n)
    if counts.get("final_dataset"):
        jobs = counts["final_dataset"]
        stages.append(Stage("final_dataset", "cpu", "paper: 9 h x 6 cores per 22,000 images, non-test volumes",
                            PAPER_PREPROCESS_CPU_H_PER_IMAGE * 9 * non_test / jobs, jobs))
    if counts.get("final_train"):
        origin = (f"measured: {train_hours:.0f} h per training" if args.gpu_train_hours
                  else f"paper: 1,000 epochs in {low:.0f}-{high:.0f} h on one A100 (mid {train_hours:.0f} h)")
        stages.append(Stage("final_train", "gpu", origin, train_hours, counts["final_train"]))
    if counts.get("final_predict"):
        jobs = counts["final_predict"]
        stages.append(Stage("final_predict", "gpu", f"assumed: {predict_s:.0f} GPU-s per test volume and group",
                            predict_s * 9 * n * TEST_SHARE / jobs / 3600, jobs))


if __name__ == "__main__":
    raise SystemExit(main())
