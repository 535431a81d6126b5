"""Seconds per stage, per job and per volume of a finished factory run, from its `benchmark:` and `log:` files.

Every rule writes benchmarks/<stage>/<job>.tsv (Snakemake's benchmark: wall seconds, CPU seconds, peak memory) and
logs/<stage>/<job>.log. A job's volumes are the sheet's volume ids its log names; its seconds per volume are the
job's seconds divided by that count. Prediction jobs also log each volume's own time ("predicted in X s"), which is
reported as the per-volume prediction figure. Usage, from the run's working directory:

    python workflow_scripts/benchmarks/bench_demo_stages.py [--root .] [--sheet resources/demo/volumes.tsv]

Every later stage is held to a budget with this table (issue: a demo cheap enough to hold the whole factory).
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from collections import defaultdict
from pathlib import Path

PREDICTED = re.compile(r"volume (\S+): group (\d+) predicted in ([0-9.]+) s")
# Which benchmark folder is which step, where a folder holds several (data, not branches: add a stage here)
STEP_OF = [
    (re.compile(r"^specialists/plan_"), "plan specialist"),
    (re.compile(r"^specialists/train_"), "train specialist"),
    (re.compile(r"^pseudolabel/\d+/shard_"), "pseudolabel shard"),
    (re.compile(r"^pseudolabel/status"), "pseudolabel status"),
    (re.compile(r"^gt/dataset/"), "gt dataset"),
    (re.compile(r"^gt/anonymize/"), "gt anonymize"),
    (re.compile(r"^shape_qc/\d+/train"), "shape_qc train"),
    (re.compile(r"^shape_qc/\d+/part_"), "shape_qc score"),
    (re.compile(r"^flavors/images/"), "flavor images"),
    (re.compile(r"^flavors/\w+/dataset_"), "flavor dataset+plan"),
    (re.compile(r"^flavors/\w+/train_"), "flavor train"),
    (re.compile(r"^flavor_predict/\d+/validation"), "flavor validate"),
    (re.compile(r"^flavor_predict/\d+/part_"), "flavor predict"),
    (re.compile(r"^ranking/scores_"), "flavor scores"),
    (re.compile(r"^ranking/rank"), "rank flavors"),
    (re.compile(r"^assembly/dataset_card"), "dataset card"),
    (re.compile(r"^final/dataset_"), "final dataset+plan"),
    (re.compile(r"^final/train_"), "final train"),
    (re.compile(r"^final/predict_"), "final predict"),
]
# The logs whose "volume V: group G predicted in S s" lines time one prediction (one volume, one model).
PREDICTION_LOGS = {"pseudo-labels": "pseudolabel", "flavors": "flavor_predict", "final model": "final"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="the run's working directory (holds benchmarks/ and logs/)")
    parser.add_argument("--sheet", default="resources/demo/volumes.tsv", help="the run's volume sheet")
    args = parser.parse_args(argv)
    root = Path(args.root)
    ids = _sheet_ids(root / args.sheet)
    jobs = read_jobs(root, ids)
    if not jobs:
        raise SystemExit(f"{root / 'benchmarks'}: no benchmark TSVs of a finished run")
    print_table(jobs)
    for what, folder in PREDICTION_LOGS.items():
        predictions = prediction_seconds(root / "logs" / folder)
        if predictions:
            print(f"\n{what}: prediction per volume and model (from {len(predictions)} 'predicted in' log lines): "
                  f"median {statistics.median(predictions):.2f} s, max {max(predictions):.2f} s")
    wall = sum(j["s"] for j in jobs)
    print(f"\nsum of job wall seconds {wall:.0f} s over {len(jobs)} jobs (jobs overlap when cores allow)")
    return 0


def read_jobs(root: Path, ids: set[str]) -> list[dict]:
    jobs = []
    for tsv in sorted((root / "benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(root / "benchmarks").with_suffix("").as_posix()
        with open(tsv, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows or "s" not in rows[0]:
            continue  # not a Snakemake benchmark file
        row = rows[-1]
        log = root / "logs" / f"{rel}.log"
        named = set(re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", log.read_text(errors="replace"))) & ids if log.is_file() else set()
        jobs.append({"step": step_of(rel), "job": rel, "s": float(row["s"]), "cpu_s": _float(row.get("cpu_time")),
                     "max_rss_mb": _float(row.get("max_rss")), "volumes": len(named)})
    return jobs


def step_of(rel: str) -> str:
    for pattern, step in STEP_OF:
        if pattern.search(rel):
            return step
    return rel.split("/", 1)[0]


def prediction_seconds(log_dir: Path) -> list[float]:
    seconds = []
    for log in sorted(log_dir.rglob("*.log")) if log_dir.is_dir() else []:
        seconds += [float(m.group(3)) for m in PREDICTED.finditer(log.read_text(errors="replace"))]
    return seconds


def print_table(jobs: list[dict]) -> None:
    by_step = defaultdict(list)
    for job in jobs:
        by_step[job["step"]].append(job)
    header = ("step", "jobs", "total s", "median job s", "max job s", "cpu s", "max RSS MB", "volumes",
              "median s/volume", "max s/volume")
    print("\t".join(header))
    for step, group in sorted(by_step.items(), key=lambda kv: -sum(j["s"] for j in kv[1])):
        seconds = [j["s"] for j in group]
        per_volume = [j["s"] / j["volumes"] for j in group if j["volumes"]]
        print("\t".join([
            step, str(len(group)), f"{sum(seconds):.1f}", f"{statistics.median(seconds):.1f}", f"{max(seconds):.1f}",
            f"{sum(j['cpu_s'] for j in group):.1f}", f"{max(j['max_rss_mb'] for j in group):.0f}",
            str(sum(j["volumes"] for j in group)),
            f"{statistics.median(per_volume):.2f}" if per_volume else "-",
            f"{max(per_volume):.2f}" if per_volume else "-",
        ]))


def _sheet_ids(sheet: Path) -> set[str]:
    if not sheet.is_file():
        return set()
    with open(sheet, newline="", encoding="utf-8-sig") as handle:
        return {row["volume_id"] for row in csv.DictReader(handle, delimiter="\t")}


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


if __name__ == "__main__":
    raise SystemExit(main())
