"""Benchmark: cads-predict on the shared example CT with a factory run's models on CPU (not a test; prints figures).

Seconds per volume and step for the example CT (122x101x30 at 3 mm; 244x202x60 once standardized to 1.5 mm) as
NIfTI and as a JPEG 2000 lossless DICOM series (with the DICOM-SEG), in two modes measured in the same run:
  default   nnU-Net's sliding window with half-overlapping tiles and probability export (the baseline)
  --fast    tiles without overlap, argmax on the model's grid and nearest-neighbour labels
Each mode loads its models once (the first volume's `load <G>` steps); statistics and preview are on.

Usage: python workflow_scripts/benchmarks/bench_predict.py [--models results] [--groups 553,559] [--threads 2]
The models are the demo's (results/specialists/models/<G>.done after `bash workflow_scripts/run_demo.sh`); groups
whose model (or whose dependency's model) is missing are left out and named.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow_scripts"))
sys.path.insert(0, str(REPO / "tests"))  # the tests' DICOM series writer
EXAMPLE_CT = REPO.parent / "shared" / "data" / "totalseg_example" / "example_ct_sm.nii.gz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=str(REPO / "results"), help="a factory run's results folder")
    parser.add_argument("--groups", help="groups to predict (default: every group with a model)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    if not EXAMPLE_CT.is_file():
        print(f"bench_predict: the shared example CT {EXAMPLE_CT} is absent")
        return 1

    import nibabel as nib
    import numpy as np
    import torch

    from cadsflow.labels import GROUP_IDS
    from cadsflow.predict.models import ModelNotFoundError, find_models, parse_groups
    from cadsflow.predict.pipeline import ModelCache, PredictSettings, predict_volume
    from cadsflow.specialists.nnunet import TRAINERS_DIR
    from test_predict_dicom import write_ct_series

    torch.set_num_threads(args.threads)
    os.environ.setdefault("nnUNet_extTrainer", str(TRAINERS_DIR))
    groups = []
    for group in parse_groups(args.groups) if args.groups else GROUP_IDS:
        try:
            find_models(args.models, (group,))
            groups.append(group)
        except ModelNotFoundError as exc:
            print(f"left out: {exc}")
    if not groups:
        print(f"bench_predict: no model under {args.models}; run the demo first (bash workflow_scripts/run_demo.sh)")
        return 1
    print(f"models: {args.models}; groups {', '.join(map(str, groups))}; torch threads {args.threads}; CPU")

    with tempfile.TemporaryDirectory(prefix="bench_predict.") as tmp:
        ct = nib.load(EXAMPLE_CT)
        series = Path(tmp) / "series_j2k"
        write_ct_series(np.asanyarray(ct.dataobj), ct.affine, series, jpeg2000=True)
        runs = []
        for mode, fast in (("default", False), ("--fast", True)):
            settings = PredictSettings(groups=tuple(groups), fast=fast, dicom_seg=True, statistics=True, preview=True)
            cache = ModelCache.from_dir(args.models, settings)
            for name, source in (("NIfTI", EXAMPLE_CT), ("DICOM j2k", series)):
                with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's prints
                    result = predict_volume(source, Path(tmp) / f"{mode}_{name}".replace(" ", "_"), cache)
                runs.append((f"{mode} {name}", result.times.steps, result.head))
    _print_table(runs)
    default_predict = sum(s for k, s in runs[1][1].items() if k.startswith("predict "))
    fast_predict = sum(s for k, s in runs[3][1].items() if k.startswith("predict "))
    print(f"\nprediction steps, DICOM input, models loaded: default {default_predict:.1f} s, --fast "
          f"{fast_predict:.1f} s ({default_predict / max(fast_predict, 1e-9):.1f}x)")
    print(f"head gate (default, NIfTI): {runs[0][2] or 'no head group predicted'}")
    return 0


def _print_table(runs) -> None:
    steps = []
    for _, times, _ in runs:
        steps += [s for s in times if s not in steps]
    width = max(len(s) for s in steps + ["total"]) + 2
    print("\nseconds per step".ljust(width + 1) + "".join(f"{label:>20}" for label, _, _ in runs))
    for step in steps + ["total"]:
        cells = [sum(times.values()) if step == "total" else times.get(step) for _, times, _ in runs]
        print(step.ljust(width) + "".join(f"{'-' if c is None else f'{c:.2f}':>20}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
