#!/usr/bin/env python
"""Benchmark: evaluating one whole-body volume (all 167 structures) with cadsflow vs. the reference library.

The baseline is what the CADS evaluation does: for every structure, build the two full-grid masks and call
DeepMind's surface-distance package (compute_dice_coefficient, compute_surface_distances,
compute_robust_hausdorff(..., 100 and 95), compute_surface_dice_at_tolerance(..., 3)). The contender is
cadsflow.evaluation.metrics.score_label_maps on the same label maps. The script prints both times, their ratio,
the peak memory each added on top of the loaded volumes, and the largest difference between their values.

Volumes (choose with --volume):
- phantom (default): a synthetic 512x512x400 whole-body label map at 1.5 mm with all 167 structures (body shell,
  muscle, cavities, organ ellipsoids, rib tubes, stacked vertebrae) and a prediction made from the same
  generator with perturbed centres and radii and a few structures missing or extra;
- example: ../shared/data/totalseg_example/example_seg{,_fast}.nii.gz resampled (nearest) from 3 mm to 1.5 mm.

Not a test: run it by hand, e.g. ``PYTHONPATH=workflow_scripts python workflow_scripts/benchmarks/bench_evaluation.py``.
Needs surface-distance (a test dependency). Peak memory is read from /proc/self/status (VmHWM after resetting it
through /proc/self/clear_refs), so it includes memory allocated in C (scipy, k-d trees), not only numpy arrays.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow_scripts"))

from cadsflow.evaluation.metrics import score_label_maps  # noqa: E402

SHARED = REPO.parent / "shared"
N_STRUCTURES = 167


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", choices=("phantom", "example"), default="phantom")
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 400), help="phantom grid (voxels)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true", help="time cadsflow only")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    if args.volume == "phantom":
        ref, pred, spacing = make_phantom_pair(tuple(args.shape), seed=args.seed)
        labels = list(range(1, N_STRUCTURES + 1))
    else:
        ref, pred, spacing, labels = load_example_pair()
    print(f"volume: {args.volume} {ref.shape} at {spacing} mm, dtype {ref.dtype}; "
          f"{len(np.unique(ref)) - 1} structures in reference, {len(np.unique(pred)) - 1} in prediction "
          f"(built in {time.perf_counter() - t0:.1f} s)")

    classes = {str(k): k for k in labels}
    mem = PeakMemory()
    with mem:
        t0 = time.perf_counter()
        ours = score_label_maps(ref, pred, spacing, classes)
        t_ours = time.perf_counter() - t0
    mem_ours = mem.peak_mb
    print(f"cadsflow  : {t_ours:8.2f} s   peak +{mem_ours:8.0f} MB")
    figures = {"volume": args.volume, "shape": list(ref.shape), "spacing_mm": list(spacing),
               "cadsflow_s": t_ours, "cadsflow_peak_mb": mem_ours}
    if not args.skip_reference:
        with mem:
            t0 = time.perf_counter()
            theirs = reference_per_structure(ref, pred, spacing, labels)
            t_ref = time.perf_counter() - t0
        mem_ref = mem.peak_mb
        diff = max_difference(ours, theirs)
        print(f"reference : {t_ref:8.2f} s   peak +{mem_ref:8.0f} MB")
        print(f"speed-up  : {t_ref / t_ours:8.1f} x")
        print(f"largest |difference| over {len(theirs)} scored structures: {diff}")
        figures.update(reference_s=t_ref, reference_peak_mb=mem_ref, ratio=t_ref / t_ours,
                       max_abs_difference=diff, structures_scored=len(theirs))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def reference_per_structure(ref, pred, spacing, labels) -> dict[str, dict[str, float]]:
    """What the CADS evaluation does: surface-distance on the full grid, structure by structure."""
    import surface_distance as sd

    # surface-distance 0.1 uses np.Inf / np.NaN, removed in NumPy 2
    np.Inf = np.inf  # type: ignore[attr-defined]
    np.NaN = np.nan  # type: ignore[attr-defined]
    out = {}
    for k in labels:
        mask_gt = ref == k
        mask_pred = pred == k
        if not mask_gt.any() and not mask_pred.any():
            continue
        dists = sd.compute_surface_distances(mask_gt, mask_pred, spacing)
        out[str(k)] = {
            "dice": sd.compute_dice_coefficient(mask_gt, mask_pred),
            "nsd": sd.compute_surface_dice_at_tolerance(dists, 3),
            "hd": sd.compute_robust_hausdorff(dists, 100),
            "hd95": sd.compute_robust_hausdorff(dists, 95),
        }
    return out


def max_difference(ours, theirs) -> float:
    worst = 0.0
    for name, ref_values in theirs.items():
        mine = ours[name]
        for metric, value in ref_values.items():
            a, b = float(getattr(mine, metric)), float(value)
            if np.isinf(a) and np.isinf(b):
                continue
            worst = max(worst, abs(a - b))
    return worst


class PeakMemory:
    """Peak resident memory added inside the block (MB), from the kernel's high-water mark."""

    def __enter__(self):
        self._reset = _reset_peak()
        self._start = _status_kb("VmRSS")
        if not self._reset:
            import tracemalloc

            tracemalloc.start()
        return self

    def __exit__(self, *exc):
        if self._reset:
            self.peak_mb = (_status_kb("VmHWM") - self._start) / 1024
        else:  # no clear_refs: numpy allocations only
            import tracemalloc

            self.peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        return False


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


# -- volumes ---------------------------------------------------------------------------------------------------


def load_example_pair():
    import nibabel as nib

    folder = SHARED / "data" / "totalseg_example"
    ref_img = nib.load(folder / "example_seg.nii.gz")
    pred_img = nib.load(folder / "example_seg_fast.nii.gz")
    factor = 2  # 3 mm -> 1.5 mm, nearest neighbour
    ref = np.asarray(ref_img.dataobj).astype(np.uint8)
    pred = np.asarray(pred_img.dataobj).astype(np.uint8)
    ref = ref.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
    pred = pred.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
    spacing = tuple(float(s) / factor for s in ref_img.header.get_zooms()[:3])
    labels = sorted((set(np.unique(ref).tolist()) | set(np.unique(pred).tolist())) - {0})
    return ref, pred, spacing, labels


def make_phantom_pair(shape, seed=0, spacing=(1.5, 1.5, 1.5)):
    """A reference and a perturbed prediction of a synthetic whole body with 167 structures."""
    rng = np.random.default_rng(seed)
    plan = _phantom_plan(shape, rng)
    ref = _draw(shape, plan, jitter=None)
    pred = _draw(shape, plan, jitter=np.random.default_rng(seed + 1))
    return ref, pred, spacing


def _phantom_plan(shape, rng):
    nx, ny, nz = shape
    cx, cy = nx / 2, ny / 2
    ax, ay = 0.36 * nx, 0.26 * ny  # body cross-section semi-axes
    plan = []  # (label, kind, params)
    plan.append((158, "ring", dict(c=(cx, cy), a=(ax, ay), t=0.06, z=(0, nz))))  # subcutaneous tissue
    plan.append((159, "ring", dict(c=(cx, cy), a=(ax * 0.94, ay * 0.94), t=0.08, z=(0, nz))))  # muscle
    plan.append((160, "ellipsoid", dict(c=(cx, cy, nz * 0.3), r=(ax * 0.75, ay * 0.7, nz * 0.25))))
    plan.append((161, "ellipsoid", dict(c=(cx, cy, nz * 0.75), r=(ax * 0.75, ay * 0.7, nz * 0.22))))
    spine = (cx, cy + ay * 0.55)
    for i, label in enumerate(range(41, 17, -1)):  # C1 (41) at the top ... L5 (18) at the bottom
        z = nz * (0.98 - 0.04 * i)
        plan.append((label, "box", dict(c=(spine[0], spine[1], z), r=(12, 10, nz * 0.017))))
    for side, labels in ((-1, range(81, 93)), (1, range(93, 105))):  # ribs: arcs of thin tubes
        for j, label in enumerate(labels):
            plan.append((label, "arc", dict(c=(cx, cy), a=(ax * 0.8, ay * 0.8), z=nz * (0.88 - 0.025 * j),
                                            side=side, r=2.5)))
    used = {lab for lab, _, _ in plan}
    for label in range(1, N_STRUCTURES + 1):
        if label in used:
            continue
        r = rng.uniform(3, 30, size=3) * np.array([1, 1, 1.3])
        c = (rng.uniform(cx - ax * 0.6, cx + ax * 0.6), rng.uniform(cy - ay * 0.6, cy + ay * 0.6),
             rng.uniform(nz * 0.05, nz * 0.95))
        plan.append((label, "ellipsoid", dict(c=c, r=tuple(r))))
    return plan


def _draw(shape, plan, jitter):
    out = np.zeros(shape, dtype=np.uint8)
    for label, kind, p in plan:
        if jitter is not None:
            u = jitter.uniform()
            if u < 0.03:
                continue  # a missed structure
            p = _perturb(kind, p, jitter)
        box, mask = _shape(shape, kind, p)
        if mask is not None:
            out[box][mask] = label
    if jitter is not None:  # a few false-positive blobs
        for label in jitter.choice(np.arange(120, 158), size=3, replace=False):
            c = tuple(jitter.uniform(0.2, 0.8) * n for n in shape)
            box, mask = _shape(shape, "ellipsoid", dict(c=c, r=(4, 4, 4)))
            out[box][mask] = label
    return out


def _perturb(kind, p, rng):
    p = dict(p)
    if "c" in p:
        p["c"] = tuple(v + rng.uniform(-2, 2) for v in p["c"])
    if "r" in p and isinstance(p["r"], tuple):
        p["r"] = tuple(v * rng.uniform(0.9, 1.1) for v in p["r"])
    if "a" in p:
        p["a"] = tuple(v * rng.uniform(0.98, 1.02) for v in p["a"])
    return p


def _shape(shape, kind, p):
    if kind == "ellipsoid" or kind == "box":
        c, r = np.array(p["c"]), np.array(p["r"])
        lo = np.maximum(np.floor(c - r), 0).astype(int)
        hi = np.minimum(np.ceil(c + r) + 1, shape).astype(int)
        if np.any(hi <= lo):
            return None, None
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        g = np.ogrid[box]
        if kind == "box":
            mask = np.ones(hi - lo, dtype=bool)
            for gi, ci, ri in zip(g, c, r):
                mask &= np.abs(gi - ci) <= ri
        else:
            mask = sum(((gi - ci) / ri) ** 2 for gi, ci, ri in zip(g, c, r)) <= 1
        return box, mask
    if kind == "ring":
        (cx, cy), (ax, ay), t = p["c"], p["a"], p["t"]
        lo = (max(int(cx - ax), 0), max(int(cy - ay), 0), p["z"][0])
        hi = (min(int(cx + ax) + 2, shape[0]), min(int(cy + ay) + 2, shape[1]), p["z"][1])
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        x, y, _ = np.ogrid[box]
        rho = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
        ring2d = (rho <= 1) & (rho >= (1 - t) ** 2)
        return box, np.broadcast_to(ring2d, tuple(b - a for a, b in zip(lo, hi)))
    if kind == "arc":
        (cx, cy), (ax, ay), z, side, r = p["c"], p["a"], p["z"], p["side"], p["r"]
        lo = (max(int(cx - ax - r - 1), 0), max(int(cy - ay - r - 1), 0), max(int(z - r - 1), 0))
        hi = (min(int(cx + ax + r + 2), shape[0]), min(int(cy + ay + r + 2), shape[1]),
              min(int(z + r + 2), shape[2]))
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        x, y, zz = np.ogrid[box]
        # distance to an ellipse approximated radially; half-body on one side
        rho = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
        radial = np.abs(rho - 1) * min(ax, ay)
        mask = (radial ** 2 + (zz - z) ** 2 <= r ** 2) & (side * (x - cx) > 0) & (y - cy < ay * 0.3)
        return box, mask
    raise ValueError(kind)


if __name__ == "__main__":
    main()
