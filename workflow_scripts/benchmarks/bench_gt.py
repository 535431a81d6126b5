"""Ground-truth preparation figures: sparse-slice interpolation and atlas registration against known truth.

    .venv/bin/python workflow_scripts/benchmarks/bench_gt.py [--quick] [--json out.json]

1. Sparse slices (Online Methods 2.1, SAROS): dense truth -> keep annotated slices -> densify; Dice against the
   truth on every slice between the first and last annotated one, for shape-based interpolation (what the factory
   uses) and nearest-slice copying (baseline).
   a) the gt body phantom at 1.5 mm, every 5th slice annotated;
   b) the same, as SAROS looks on the 1.5 mm grid: 5 mm source slices, every 5th -> runs of 3 slices every 17;
   c) the demo cohort's own anatomy (cadsflow.phantom, the demo_saros classes), every 5th slice.
2. Atlas registration (group 557, ANTs SyN + genericLabel): Dice per tissue before (atlas labels placed
   unregistered on the target grid) and after registration.
   a) phantom atlas -> the same phantom under a known smooth deformation, 48^3 at 4 mm;
   b) the same at the default atlas grid (96 x 112 x 104 at 1.5 mm) [skipped with --quick];
   c) phantom atlas -> the demo cohort's head phantom (another generator: different anatomy), truth = its masks
      for the 7 tissues it draws; "before" = atlas labels with the field-of-view centres aligned.
Timings are wall-clock seconds on this machine (informative only).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy import ndimage

from cadsflow.gt.atlas import (
    PHANTOM_SHAPE,
    Atlas,
    RegistrationSettings,
    known_deformation,
    make_phantom_atlas,
    register_atlas_labels,
    spacing_of,
)
from cadsflow.gt.phantoms import body_phantom, sparsify
from cadsflow.gt.sparse import densify_sparse_labels, nearest_slice_fill
from cadsflow.labels import load_label_space

UNANNOTATED = 255
DEMO_HEAD_ATLAS_SHAPE = (47, 53, 69)  # the phantom atlas sized like the demo cohort's heads (SCALE 0.35) at 1.5 mm


def dice(a: np.ndarray, b: np.ndarray, c: int) -> float:
    x, y = a == c, b == c
    total = x.sum() + y.sum()
    return float(2.0 * (x & y).sum() / total) if total else float("nan")


# ---------------------------------------------------------------- sparse slices


def bench_sparse(name: str, truth: np.ndarray, classes: dict[str, int], step: int, run: int = 1) -> dict:
    sparse = sparsify(truth, step, UNANNOTATED, run=run)
    t0 = time.perf_counter()
    dense = densify_sparse_labels(sparse, UNANNOTATED).labels
    seconds = time.perf_counter() - t0
    nearest = nearest_slice_fill(sparse, UNANNOTATED)
    keys = np.flatnonzero(~(sparse == UNANNOTATED).any(axis=(0, 1)))
    inside = slice(int(keys[0]), int(keys[-1]) + 1)
    rows = {
        n: {"shape_based": dice(dense[..., inside], truth[..., inside], c),
            "nearest_slice": dice(nearest[..., inside], truth[..., inside], c)}
        for n, c in classes.items()
    }
    mean = {k: float(np.nanmean([r[k] for r in rows.values()])) for k in ("shape_based", "nearest_slice")}
    _print_table(f"sparse {name}: {truth.shape}, step {step}, run {run}, {seconds:.2f} s", rows,
                 ("shape_based", "nearest_slice"), mean)
    return {"shape": list(truth.shape), "step": step, "run": run, "seconds": seconds, "dice": rows, "mean": mean}


def demo_saros_truth(seed: int = 20261127) -> tuple[np.ndarray, dict[str, int]]:
    """The demo cohort's SAROS-like labels, dense (cadsflow.phantom anatomy, demo_saros classes)."""
    import yaml

    from cadsflow.demo import DEMO_COHORT_YAML
    from cadsflow.phantom import make_grid, make_phantom

    spec = yaml.safe_load(DEMO_COHORT_YAML.read_text())["sources"]["demo_saros"]
    grid = make_grid("torso", spacing=(1.5, 1.5, 1.5), orientation="RAS")
    _, masks = make_phantom(grid, seed)
    classes = {name: i for i, name in enumerate(spec["labels"], start=1)}
    labels = np.zeros(grid.shape, dtype=np.uint8)
    for name, value in classes.items():
        labels[masks[name]] = value
    return labels, classes


# ---------------------------------------------------------------- registration


def bench_registration(name: str, atlas: Atlas, target_image, target_affine, truth, names: dict[str, int],
                       before: np.ndarray) -> dict:
    t0 = time.perf_counter()
    warped = register_atlas_labels(target_image, target_affine, atlas, RegistrationSettings(random_seed=1))
    seconds = time.perf_counter() - t0
    rows = {n: {"before": dice(before, truth, c), "after": dice(warped, truth, c)} for n, c in names.items()}
    mean = {k: float(np.nanmean([r[k] for r in rows.values()])) for k in ("before", "after")}
    _print_table(f"registration {name}: target {truth.shape}, {seconds:.1f} s", rows, ("before", "after"), mean)
    return {"target_shape": list(truth.shape), "seconds": seconds, "dice": rows, "mean": mean}


def known_deformation_case(shape, spacing_mm: float, space) -> tuple:
    atlas = make_phantom_atlas(shape, spacing_mm, seed=0, space=space)
    target = make_phantom_atlas(shape, spacing_mm, warp=known_deformation(), seed=1, space=space)
    return atlas, target.image, target.affine, target.labels, atlas.labels  # before: same grid, unregistered


def demo_head_case(space) -> tuple:
    """Phantom atlas -> the demo cohort's head phantom; truth = the demo's own tissue masks."""
    from cadsflow.phantom import make_grid, make_phantom

    grid = make_grid("head", spacing=(1.5, 1.5, 1.5), orientation="RAS")
    image, masks = make_phantom(grid, 20261127 + 2000)
    ids = space.group_label_map(557)
    truth = np.zeros(grid.shape, dtype=np.uint8)
    for name in ("scalp", "compact bone", "spongy bone", "csf", "gray matter", "white matter", "eye balls"):
        truth[masks[name]] = ids[name]
    atlas = make_phantom_atlas(DEMO_HEAD_ATLAS_SHAPE, 1.5, seed=0, space=space)
    before = _centred(atlas.labels, atlas.affine, grid.shape, np.diag([1.5, 1.5, 1.5, 1.0]))
    affine = np.diag([1.5, 1.5, 1.5, 1.0])  # standardized: scale only, zero translation
    return atlas, image, affine, truth, before


def _centred(labels, affine, shape, target_affine) -> np.ndarray:
    """Atlas labels on the target grid with the two field-of-view centres aligned (no registration)."""
    scale = np.asarray(spacing_of(target_affine)) / np.asarray(spacing_of(affine))
    centre_in, centre_out = (np.asarray(labels.shape) - 1) / 2.0, (np.asarray(shape) - 1) / 2.0
    return ndimage.affine_transform(labels, np.diag(scale), offset=centre_in - scale * centre_out, output_shape=shape,
                                    order=0, mode="constant", cval=0)


def _print_table(title: str, rows: dict, columns, mean: dict) -> None:
    print(f"\n{title}")
    print(f"  {'structure':<22}" + "".join(f"{c:>15}" for c in columns))
    for n, r in rows.items():
        print(f"  {n:<22}" + "".join(f"{r[c]:>15.3f}" for c in columns))
    print(f"  {'mean':<22}" + "".join(f"{mean[c]:>15.3f}" for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the full-size registration")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    space = load_label_space()
    body = {"subcutaneous_tissue": 1, "muscle": 2, "abdominal_cavity": 3, "bones": 5, "glands (tapering organ)": 6}
    out = {"sparse": {}, "registration": {}}
    truth = body_phantom((128, 112, 161))
    out["sparse"]["body_every_5th"] = bench_sparse("body phantom, every 5th slice", truth, body, 5)
    out["sparse"]["body_saros_on_1.5mm"] = bench_sparse("body phantom, SAROS on 1.5 mm grid", truth, body, 17, 3)
    demo, classes = demo_saros_truth()
    out["sparse"]["demo_saros_every_5th"] = bench_sparse("demo cohort anatomy, every 5th slice", demo, classes, 5)

    names = space.group_label_map(557)
    case = known_deformation_case((48, 48, 48), 4.0, space)
    out["registration"]["known_deformation_48"] = bench_registration(
        "known deformation, 48^3 at 4 mm", *case[:4], names, case[4])
    if not args.quick:
        case = known_deformation_case(PHANTOM_SHAPE, 1.5, space)
        out["registration"]["known_deformation_default"] = bench_registration(
            f"known deformation, {PHANTOM_SHAPE} at 1.5 mm", *case[:4], names, case[4])
    case = demo_head_case(space)
    shared = {n: names[n] for n in ("scalp", "compact bone", "spongy bone", "csf", "gray matter", "white matter",
                                     "eye balls")}
    out["registration"]["demo_head"] = bench_registration("phantom atlas -> demo cohort head", *case[:4], shared,
                                                          case[4])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=1)


if __name__ == "__main__":
    main()
