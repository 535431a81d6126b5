"""Proof that the factory's training path learns: one specialist (group 559, body regions) trained on the demo
cohort with the `learn` preset on this machine's CPUs, scored against the phantoms' complete truth.

Every step is the factory's own: the gt stage's nnU-Net export of group 559 (run the demo up to it, and every volume
standardized, first: `bash workflow_scripts/run_demo.sh results/quarantine/quarantine.tsv
results/specialists/nnUNet_raw/Dataset559_BodyRegions/dataset.json`), rebuilt by the gt stage's code with the
SAROS-like volumes' unannotated slices left to nnU-Net's ignore label (--sparse-labels, default ignore; `interpolate`
is the paper's shape-based interpolation and the demo's default, `results` the demo's export as it is), planning and
training in the job's own process (`python -m cadsflow.specialists`), shard inference (`python -m
cadsflow.pseudolabel`, the preset's export), and the inverse of standardization (cadsflow.standardize.restore_label)
onto each volume's original grid, where the phantom generator's masks are the truth. Prints per structure: volumes
with the structure, median truth volume (ml), mean Dice over all volumes, over the volumes the model trained on and
over the others; then the mean Dice of the structures larger than --large-ml (default 50 ml), the same per body
region of the scored volumes (the training volumes: a whole body and a torso), and the wall-clock and CPU seconds of
each step.

    .venv/bin/python workflow_scripts/benchmarks/bench_learning.py [--results results] [--work /tmp/cads_learn] [--preset learn]
        [--sparse-labels ignore|interpolate|results]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_truth_dice import demo_volumes, dice  # noqa: E402

from cadsflow.demo import DEMO_COHORT_YAML  # noqa: E402
from cadsflow.gt.sparse import IGNORE, INTERPOLATE, SPARSE_MODES  # noqa: E402
from cadsflow.imageio import read_volume  # noqa: E402
from cadsflow.labels import load_label_space  # noqa: E402
from cadsflow.standardize import restore_label  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
GROUP = 559
DATASET = "Dataset559_BodyRegions"
CPU_SECONDS: dict[str, float] = {}  # per step, filled by run()
# What the bench needs of a demo run, as Snakemake targets: the quarantine table (every volume standardized) and the gt
# stage's group-559 export. File targets, not `--until`: Snakemake 9.27 stops a fresh run `--until gt_group_dataset
# standardize` with "BUG: Out of jobs ready to be started" (snakemake/snakemake#823) before any gt job.
PREREQUISITES = f"results/quarantine/quarantine.tsv results/specialists/nnUNet_raw/{DATASET}/dataset.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="a demo run's results folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cads_learn"), help="scratch nnU-Net folders")
    parser.add_argument("--preset", default="learn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--large-ml", type=float, default=50.0)
    parser.add_argument("--sparse-labels", choices=(*SPARSE_MODES, "results"), default=IGNORE,
                        help="the sparse training volumes' unannotated slices: the gt stage's code rebuilds group "
                        "559's dataset from the standardized volumes in this mode (gt.sparse_labels), or 'results' "
                        "takes the demo run's own export as it is (default: %(default)s)")
    parser.add_argument("--registry", type=Path, default=REPO / "resources" / "demo" / "registry.yaml",
                        help="the demo run's source registry (for --sparse-labels other than 'results')")
    args = parser.parse_args(argv)
    raw_dataset = args.results / "specialists" / "nnUNet_raw" / DATASET
    if not (raw_dataset / "dataset.json").is_file():
        raise SystemExit(f"{raw_dataset}: missing; run `bash workflow_scripts/run_demo.sh {PREREQUISITES}`")
    missing = [v for v, _ in demo_volumes(DEMO_COHORT_YAML)
               if not any(args.results.glob(f"standardized/*/{v}/record.json"))]
    if missing:  # checked before minutes of training, not after
        raise SystemExit(f"{args.results}/standardized: {len(missing)} demo volumes not standardized "
                         f"({', '.join(missing)}); run `bash workflow_scripts/run_demo.sh {PREREQUISITES}`")
    if args.work.exists():
        shutil.rmtree(args.work)
    raw, pre, models = args.work / "raw", args.work / "preprocessed", args.work / "models"
    raw.mkdir(parents=True)
    if args.sparse_labels == "results":
        shutil.copytree(raw_dataset, raw / DATASET)
    else:
        export_dataset(args.results, raw_dataset, args.registry, args.sparse_labels, args.work / "gt", raw / DATASET)
    common = ["--group", str(GROUP), "--preset", args.preset, "--nnunet-raw", str(raw), "--nnunet-preprocessed",
              str(pre), "--nnunet-results", str(models), "--threads", str(args.threads)]
    seconds = {}
    seconds["plan"] = run([sys.executable, "-m", "cadsflow.specialists", "plan", "--dataset", str(raw / DATASET),
                           "--marker", str(args.work / "planned.json"), "--log", str(args.work / "plan.log"), *common])
    seconds["train"] = run([sys.executable, "-m", "cadsflow.specialists", "train", "--planned",
                            str(args.work / "planned.json"), "--marker", str(args.work / "model.json"), "--log",
                            str(args.work / "train.log"), *common])
    from cadsflow.specialists.presets import load_preset

    preset = load_preset(args.preset)
    volumes = sorted(p.parent for p in args.results.glob("standardized/*/*/image.nii.gz"))
    out = args.work / "predictions"
    seconds["predict"] = run([
        sys.executable, "-m", "cadsflow.pseudolabel", "--group", str(GROUP), "--model", str(args.work / "model.json"),
        "--volumes", *map(str, volumes), "--out-dir", str(out), "--report", str(out / "shard_0.tsv"),
        "--threads", str(args.threads), "--tile-step-size", str(preset.tile_step_size),
        "--label-resampling", preset.label_resampling, "--log", str(args.work / "predict.log")],
        env_extra={"nnUNet_extTrainer": str(REPO / "workflow_scripts" / "nnunet_trainers")})
    trained_on = sorted(p.name.removesuffix(".nii.gz") for p in (raw / DATASET / "labelsTr").glob("*.nii.gz"))
    rows = score(args.results, out, set(trained_on))
    print(f"group {GROUP}, preset {args.preset}: trained on {len(trained_on)} volumes ({', '.join(trained_on)}), "
          f"scored on {len(volumes)} demo volumes against the phantom truth on their original grids")
    gt_root = args.results if args.sparse_labels == "results" else args.work
    print(f"training truth of the sparse (SAROS-like) volumes: {sparse_modes(gt_root, trained_on)}")
    print(f"target spacing {preset.target_spacing_mm} mm, schedule {preset.schedule}, network {preset.network}, "
          f"tile step {preset.tile_step_size}, label resampling {preset.label_resampling}, threads {args.threads}")
    print_table(rows, args.large_ml)
    print_by_region(rows, args.large_ml, demo_regions(DEMO_COHORT_YAML))
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + f", total {sum(seconds.values()):.0f}"
          + "; CPU seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in CPU_SECONDS.items())
          + f", total {sum(CPU_SECONDS.values()):.0f}")
    return 0


def export_dataset(results: Path, demo_dataset: Path, registry: Path, mode: str, gt_dir: Path, out: Path) -> None:
    """Group 559's nnU-Net dataset as the gt stage writes it (cadsflow.gt.volume.prepare_volume_gt, then
    cadsflow.gt.nnunet_dataset.write_group_dataset), for the demo export's training volumes, from their standardized
    volumes, with a sparse source's unannotated slices made `mode` (gt.sparse_labels)."""
    import json

    from cadsflow.gt.nnunet_dataset import CandidateVolume, write_group_dataset
    from cadsflow.gt.training import GroupTraining
    from cadsflow.gt.volume import prepare_volume_gt
    from cadsflow.sources import load_registry

    sources = load_registry(registry)
    candidates = []
    for label in sorted((demo_dataset / "labelsTr").glob("*.nii.gz")):
        volume_id = label.name.removesuffix(".nii.gz")
        standardized = next(results.glob(f"standardized/*/{volume_id}"))
        source = json.loads((standardized / "record.json").read_text())["source"]
        prepare_volume_gt(volume_id, sources[source], standardized, gt_dir / "export" / volume_id, sparse_labels=mode)
        candidates.append(CandidateVolume(volume_id, source, str(standardized), str(gt_dir / "export" / volume_id)))
    training = GroupTraining(GROUP, DATASET.split("_", 1)[1], "source", tuple(sorted({c.source for c in candidates})))
    write_group_dataset(training, candidates, out)


def sparse_modes(results: Path, volume_ids) -> str:
    """What the gt stage made of the training volumes' unannotated slices (config gt.sparse_labels), from their gt
    records: e.g. "interpolate (2 volumes)"; "none" when no training volume is sparse."""
    import json

    modes: dict[str, int] = {}
    for volume_id in volume_ids:
        for record in results.glob(f"gt/*/{volume_id}/record.json"):
            sparse = json.loads(record.read_text()).get("sparse")
            if sparse:
                mode = sparse.get("mode", INTERPOLATE)  # records written before the option: interpolated
                modes[mode] = modes.get(mode, 0) + 1
    return ", ".join(f"{m} ({n} volumes)" for m, n in sorted(modes.items())) or "none"


def run(cmd: list[str], env_extra: dict | None = None) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "workflow_scripts"), os.environ.get("PYTHONPATH", "")]))
    env.update(env_extra or {})
    started, cpu_before = time.monotonic(), _children_cpu()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    step = cmd[3] if cmd[2] == "cadsflow.specialists" else "predict"
    CPU_SECONDS[step] = _children_cpu() - cpu_before
    return time.monotonic() - started


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (on a shared machine: the work, not the wait)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_table(rows: dict[str, tuple[list, list, list]], large_ml: float) -> None:
    """Per structure (largest first): volumes, median truth ml, mean Dice over all / training / other volumes; then
    the mean Dice of the structures whose median truth volume exceeds `large_ml` against the 0.85 goal."""
    print(f"{'structure':<22}{'volumes':>8}{'median ml':>11}{'mean Dice':>11}{'training':>10}{'others':>8}")
    large = []
    for name, (ml, values, trained, _) in sorted(rows.items(), key=lambda kv: -np.median(kv[1][0])):
        mean = float(np.mean(values))
        on_train = [v for v, t in zip(values, trained) if t]
        others = [v for v, t in zip(values, trained) if not t]
        print(f"{name:<22}{len(values):>8}{np.median(ml):>11.1f}{mean:>11.3f}{_mean(on_train):>10}{_mean(others):>8}")
        if np.median(ml) > large_ml:
            large.append(mean)
    print(f"structures over {large_ml:.0f} ml: {len(large)}, mean Dice {np.mean(large):.3f} "
          f"(goal >= 0.85: {'met' if large and np.mean(large) >= 0.85 else 'NOT met'})")


def print_by_region(rows: dict[str, tuple[list, list, list, list]], large_ml: float, regions: dict[str, str]) -> None:
    """Mean Dice of the structures over `large_ml` on the volumes of each body region of the demo cohort (the SAROS-like
    training volumes are a whole body and a torso; the head volumes show the model heads of other sources)."""
    per_region: dict[str, list[float]] = {}
    volumes: dict[str, set[str]] = {}
    for ml, values, _, ids in rows.values():
        if np.median(ml) <= large_ml:
            continue
        for value, volume_id in zip(values, ids):
            per_region.setdefault(regions[volume_id], []).append(value)
            volumes.setdefault(regions[volume_id], set()).add(volume_id)
    print("by body region of the scored volume, structures over %.0f ml: " % large_ml + "; ".join(
        f"{r} {np.mean(v):.3f} ({len(volumes[r])} volumes)" for r, v in sorted(per_region.items())))


def demo_regions(spec_path: Path) -> dict[str, str]:
    """Volume id -> the body region its phantom was rendered from (config/demo_cohort.yaml)."""
    import yaml

    spec = yaml.safe_load(Path(spec_path).read_text())
    return {f"{name}_case{i:03d}": region for name, src in spec["sources"].items()
            for i, region in enumerate(src["regions"])}


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.3f}" if values else "-"


def score(results: Path, predictions: Path, trained_on: set[str]) -> dict[str, tuple[list, list, list, list]]:
    """Per structure of group 559: (truth volumes in ml, Dice per volume where the truth has it, whether that volume
    is one the model trained on, the volume's id)."""
    import json

    labels_of = load_label_space().group_label_map(GROUP)
    rows: dict[str, tuple[list[float], list[float], list[bool], list[str]]] = {}
    for volume_id, masks in demo_volumes(DEMO_COHORT_YAML):
        record = next(results.glob(f"standardized/*/{volume_id}/record.json"))
        geometry = json.loads(record.read_text())["geometry"]
        labels, affine = restore_label(read_volume(predictions / f"{volume_id}.nii.gz").data, geometry)
        voxel_ml = abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1000.0
        for name, label_id in labels_of.items():
            truth = masks.get(name)
            if truth is None or not truth.any():
                continue
            ml, values, trained, ids = rows.setdefault(name, ([], [], [], []))
            ml.append(float(truth.sum()) * voxel_ml)
            values.append(dice(labels == label_id, truth))
            trained.append(volume_id in trained_on)
            ids.append(volume_id)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
