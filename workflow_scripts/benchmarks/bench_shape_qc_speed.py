#!/usr/bin/env python
"""Benchmark: seconds per scored volume of the shape-QC scoring (cadsflow.shape_qc.score), baseline code vs this
checkout, on the pseudo-labels of a finished demo run, in one process; and how far the two paths' HD90 differ.

Both paths score the same volumes (after one untimed warm-up volume each) with the same prior file, preset and
seed (score_label_map: reconstruction, decoding on the grid, HD90 per structure). The baseline is the package as of
git revision --baseline-rev (extracted with `git archive` into a temporary folder and imported first; its
functions keep their own modules when the checkout's package is imported after it), so what is compared is the
code, not settings. The preset is read by each path from its own config/shape_qc.yaml.

Printed: per group, median / max / total seconds per volume of each path and the speed-up; per group the largest
|HD90 difference| (mm) over the rows both paths scored, and the rows whose status differs.

Run by hand on the finished demo run (2 CPU cores shared: nice), e.g.
``nice -n 15 .venv/bin/python workflow_scripts/benchmarks/bench_shape_qc_speed.py --root /work/scratch/<copy>``
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BASELINE_REV = "3e19ffa"  # the last commit before the scoring speed-up (issue 9)
GROUPS = ("551", "555", "559")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="a finished demo run (results/shape_qc/G/prior.pt)")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS))
    parser.add_argument("--every", type=int, default=1, help="score every n-th volume of a group (default: all)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        baseline = _import_paths(_extract(args.baseline_rev, Path(tmp)))
        current = _import_paths(REPO)
        import torch

        torch.set_num_threads(args.threads)
        print(f"baseline: git {args.baseline_rev}; new: {REPO} (working tree); preset {args.preset}, seed {args.seed}, "
              f"{args.threads} torch thread(s)")
        for group in args.groups:
            volumes = _volumes(args.root, group)[:: args.every]
            results = {name: _score_all(paths, args.root, group, volumes, args) for name, paths in
                       (("baseline", baseline), ("new", current))}
            _report(group, volumes, results)


def _extract(rev: str, into: Path) -> Path:
    """The repository's workflow_scripts/ and config/ at `rev`, written under `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "workflow_scripts", "config"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _import_paths(root: Path) -> dict:
    """The scoring functions of the cadsflow package under `root`, imported afresh (earlier imports set aside)."""
    for name in [m for m in sys.modules if m == "cadsflow" or m.startswith("cadsflow.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root / "workflow_scripts"))
    try:
        score = importlib.import_module("cadsflow.shape_qc.score")
        model = importlib.import_module("cadsflow.shape_qc.model")
        presets = importlib.import_module("cadsflow.shape_qc.presets")
        sampling = importlib.import_module("cadsflow.shape_qc.sampling")
    finally:
        sys.path.remove(str(root / "workflow_scripts"))
    return {"score_label_map": score.score_label_map, "load_prior": model.load_prior,
            "preset": lambda name: presets.load_preset(name, root / "config" / "shape_qc.yaml"),
            "read": sampling.read_label_map}


def _volumes(root: Path, group: str) -> list[tuple[str, Path]]:
    """(volume id, pseudo-label path) of the volumes the group's shard reports call ok."""
    import csv

    out = []
    for report in sorted((root / "results" / "pseudolabels" / group).glob("shard_*.tsv")):
        with open(report, newline="") as handle:
            ids = [row["volume_id"] for row in csv.DictReader(handle, delimiter="\t") if row["status"] == "ok"]
        for volume_id in ids:
            in_shard = report.with_suffix("") / f"{volume_id}.nii.gz"
            out.append((volume_id, in_shard if in_shard.exists() else report.parent / f"{volume_id}.nii.gz"))
    return out


def _score_all(paths: dict, root: Path, group: str, volumes, args) -> dict:
    prior = paths["load_prior"](root / "results" / "shape_qc" / group / "prior.pt")
    preset = paths["preset"](args.preset)
    seconds, rows = [], {}
    if volumes:  # warm-up, untimed: torch's first calls in a process are slow, and only one path would pay them
        labels, affine = paths["read"](volumes[0][1], len(prior.meta.structures))
        paths["score_label_map"](prior, labels, affine, volumes[0][0], preset, args.seed)
    for volume_id, path in volumes:
        labels, affine = paths["read"](path, len(prior.meta.structures))
        start = time.perf_counter()
        volume_rows, _ = paths["score_label_map"](prior, labels, affine, volume_id, preset, args.seed)
        seconds.append(time.perf_counter() - start)
        for row in volume_rows:
            rows[(row["volume_id"], row["structure"])] = (row["status"], row["hd90_mm"])
    return {"seconds": np.array(seconds), "rows": rows}


def _report(group: str, volumes, results: dict) -> None:
    base, new = results["baseline"], results["new"]
    print(f"\ngroup {group}: {len(volumes)} volumes")
    print(f"  {'path':9s} {'median s':>9s} {'max s':>7s} {'total s':>8s}")
    for name in ("baseline", "new"):
        s = results[name]["seconds"]
        print(f"  {name:9s} {np.median(s):9.2f} {s.max():7.2f} {s.sum():8.2f}")
    print(f"  speed-up (total): {base['seconds'].sum() / new['seconds'].sum():.2f}x; per volume (s) baseline -> new:")
    for (volume_id, _), t0, t1 in zip(volumes, base["seconds"], new["seconds"]):
        print(f"    {volume_id:28s} {t0:6.2f} -> {t1:5.2f}")
    both = [k for k in base["rows"] if k in new["rows"] and np.isfinite(base["rows"][k][1])
            and np.isfinite(new["rows"][k][1])]
    diffs = np.array([abs(base["rows"][k][1] - new["rows"][k][1]) for k in both]) if both else np.zeros(0)
    changed = sorted(k for k in base["rows"] if new["rows"].get(k, (None,))[0] != base["rows"][k][0])
    print(f"  HD90 rows scored by both: {len(both)}; max |HD90 difference| {diffs.max() if len(diffs) else 0.0:.4f} mm;"
          f" rows > 0.01 mm apart: {int((diffs > 0.01).sum())}; rows whose status differs: {len(changed)}")
    for key in changed[:10]:
        print(f"    {key}: {base['rows'][key][0]} -> {new['rows'].get(key, ('(none)',))[0]}")


if __name__ == "__main__":
    main()
