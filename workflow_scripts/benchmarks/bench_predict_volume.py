"""Benchmark: seconds per step of one pseudo-label prediction (a shard job's `predicted in`), old path against new.

On a finished demo run (--root: its standardized volumes and its specialists' models), for each group every volume is
predicted twice in the same process, by
  old  the path before the speed-ups: nnU-Net's run_case_npy and predict_logits_from_preprocessed_data (per-call
       weight reload, tile worker thread, whole-tile accumulators) and the per-structure clean-up (each structure's
       mask over the whole volume, labelled alone with scipy), as this file's `old_*` functions keep them;
  new  cadsflow.pseudolabel.infer.preprocess (nnU-Net's run_case_npy),
       cadsflow.pseudolabel.infer.predict_logits (the sliding window with nnU-Net's arithmetic, the network
       compiled for CPU inference) and cadsflow.pseudolabel.postprocess.clean_components (one bounding-box pass,
       one multi-label labelling);
with the settings the smoke preset's shard jobs use (tile step 1.0, labels resampled by nearest neighbour, one torch
thread). Steps: read (gzip NIfTI), preprocess (nnU-Net's crop, normalisation, resampling to the plans' spacing),
forward, argmax, resize (nearest + insert into the uncropped grid), cleanup, save (gzip NIfTI with the fingerprint).
Printed per group: median seconds per step, old and new, the median total, the new path's one-time compilation of
the network (paid by a job's first volume), and agreement: the raw label maps before clean-up (old vs new forward:
the compiled network's float32 rounding may flip near-ties), the two clean-ups on the same raw map (exact: must be
1.0), the nnU-Net arithmetic of the new forward pass with the eager network (exact: must be 1.0), and the final
label maps (share of identical voxels, mean Dice over the labels present).

Usage: python workflow_scripts/benchmarks/bench_predict_volume.py --root /path/to/finished/demo/run
           [--groups 551,555,559] [--volumes 12] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow_scripts"))

STEPS = ("read", "preprocess", "forward", "argmax", "resize", "cleanup", "save")
SMOKE_TILE_STEP, SMOKE_RESAMPLING = 1.0, "nearest"  # config/presets.yaml, smoke


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="a finished demo run (its results/ folder is read)")
    parser.add_argument("--groups", default="551,555,559", help="specialist groups (default 551, 555, 559)")
    parser.add_argument("--volumes", type=int, default=12, help="standardized volumes per group (spread over sources)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the smoke preset's: 1)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from cadsflow.specialists.nnunet import TRAINERS_DIR

    os.environ.setdefault("nnUNet_extTrainer", str(TRAINERS_DIR))
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    volumes = _volumes(root, args.volumes)
    print(f"bench_predict_volume: {len(volumes)} volumes of {root}, torch threads {args.threads}, "
          f"tile step {SMOKE_TILE_STEP}, label resampling {SMOKE_RESAMPLING}")
    with tempfile.TemporaryDirectory() as tmp:
        for group in (int(g) for g in args.groups.split(",")):
            _bench_group(root, group, volumes, Path(tmp), np)
    return 0


def _bench_group(root: Path, group: int, volumes: list[Path], tmp: Path, np) -> None:
    from cadsflow.pseudolabel.cpu_compile import tile_network
    from cadsflow.pseudolabel.infer import load_predictor
    from cadsflow.pseudolabel.postprocess import clean_components_per_structure, load_cleanup_rules

    predictor = load_predictor(_model_dir(root, group), "all", "cpu", tile_step_size=SMOKE_TILE_STEP)
    rules = load_cleanup_rules(group)
    started = time.perf_counter()
    tile_network(predictor, (1, *predictor.configuration_manager.patch_size))
    compile_seconds = time.perf_counter() - started
    times = {path: {step: [] for step in STEPS} for path in ("old", "new")}
    totals = {"old": [], "new": []}
    same, dices, raw_same, cleanup_same, eager_same = [], [], [], [], []
    for i, image in enumerate(volumes):
        order = ("old", "new") if i % 2 == 0 else ("new", "old")  # alternate: neither path always runs warm
        maps, raw = {}, {}
        for path in order:
            seconds, raw[path], maps[path] = _predict_steps(predictor, image, rules, path == "new",
                                                            tmp / f"{path}.nii.gz")
            for step in STEPS:
                times[path][step].append(seconds[step])
            totals[path].append(sum(seconds.values()))
        same.append(float(np.mean(maps["old"] == maps["new"])))
        raw_same.append(float(np.mean(raw["old"] == raw["new"])))
        cleanup_same.append(float(np.mean(clean_components_per_structure(raw["new"], rules) == maps["new"])))
        eager_same.append(_eager_arithmetic_agreement(predictor, image, np))
        dices.append(_mean_dice(maps["old"], maps["new"], np))
    plans = predictor.configuration_manager
    print(f"\ngroup {group}: {len(volumes)} volumes, {predictor.label_manager.num_segmentation_heads} classes, "
          f"patch {list(plans.patch_size)} at {list(plans.spacing)} mm, {len(rules.labels())} clean-up rules")
    print(f"  {'step':<11}{'old s':>9}{'new s':>9}{'new/old':>9}")
    for step in STEPS:
        old, new = np.median(times["old"][step]), np.median(times["new"][step])
        print(f"  {step:<11}{old:9.3f}{new:9.3f}{_ratio(new, old):>9}")
    old, new = np.median(totals["old"]), np.median(totals["new"])
    print(f"  {'total':<11}{old:9.3f}{new:9.3f}{_ratio(new, old):>9}   (median of per-volume sums; max old "
          f"{max(totals['old']):.3f}, new {max(totals['new']):.3f})")
    print(f"  one-time network compilation (new path, a job's first volume): {compile_seconds:.3f} s")
    print(f"  identical voxels, min over volumes: raw maps old vs new forward {min(raw_same):.6f}; old vs new clean-up "
          f"of the same map {min(cleanup_same):.6f}; nnU-Net vs new arithmetic, eager network {min(eager_same):.6f}")
    print(f"  final label maps old vs new: identical voxels min {min(same):.6f}, mean Dice min {min(dices):.6f}")


def _predict_steps(predictor, image: Path, rules, new: bool, out: Path):
    """One volume through one path, timed step by step; returns the seconds and the saved label map."""
    import numpy as np
    import torch
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    from cadsflow.imageio import read_volume
    from cadsflow.pseudolabel.infer import nearest_resize, predict_logits, preprocess, save_label_map
    from cadsflow.pseudolabel.postprocess import clean_components, clean_components_per_structure

    seconds = {}
    clock = time.perf_counter()

    def lap(step):
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = now - clock
        clock = now

    volume = read_volume(image)
    lap("read")
    data = np.ascontiguousarray(np.asarray(volume.data, dtype=np.float32).transpose(2, 1, 0))[None]
    plans, configuration = predictor.plans_manager, predictor.configuration_manager
    spacing = [float(s) for s in volume.zooms[::-1]]
    if new:
        model_input, properties = preprocess(predictor, data, spacing)
    else:
        model_input, _, properties = configuration.preprocessor_class(verbose=False).run_case_npy(
            data, None, {"spacing": spacing}, plans, configuration, predictor.dataset_json)
    lap("preprocess")
    model_input = torch.from_numpy(model_input)
    logits = predict_logits(predictor, model_input) if new else old_predict_logits(predictor, model_input)
    lap("forward")
    on_model_grid = np.asarray(predictor.label_manager.convert_logits_to_segmentation(logits), dtype=np.uint8)
    lap("argmax")
    cropped = nearest_resize(on_model_grid, properties["shape_after_cropping_and_before_resampling"])
    full = insert_crop_into_image(np.zeros(properties["shape_before_cropping"], dtype=np.uint8), cropped,
                                  properties["bbox_used_for_cropping"])
    labels = np.ascontiguousarray(np.asarray(full).transpose(plans.transpose_backward).transpose(2, 1, 0))
    lap("resize")
    raw = labels
    labels = clean_components(labels, rules) if new else clean_components_per_structure(labels, rules)
    lap("cleanup")
    save_label_map(labels, volume.affine, out, "0" * 64)
    lap("save")
    return seconds, raw, labels


def _eager_arithmetic_agreement(predictor, image: Path, np) -> float:
    """Share of voxels where predict_logits with the eager (uncompiled) network and nnU-Net's own entry point give the
    same argmax on the model's grid (the replicated half-precision arithmetic is meant to be exact)."""
    import torch

    from cadsflow.imageio import read_volume
    from cadsflow.pseudolabel.cpu_compile import COMPILED
    from cadsflow.pseudolabel.infer import predict_logits

    volume = read_volume(image)
    data = np.ascontiguousarray(np.asarray(volume.data, dtype=np.float32).transpose(2, 1, 0))[None]
    configuration = predictor.configuration_manager
    model_input = torch.from_numpy(configuration.preprocessor_class(verbose=False).run_case_npy(
        data, None, {"spacing": [float(s) for s in volume.zooms[::-1]]}, predictor.plans_manager, configuration,
        predictor.dataset_json)[0])
    compiled = COMPILED[predictor]
    COMPILED[predictor] = (compiled[0], predictor.network)
    try:
        new = predict_logits(predictor, model_input)
    finally:
        COMPILED[predictor] = compiled
    old = old_predict_logits(predictor, model_input)
    if not torch.equal(new, old):
        return float((new.argmax(0) == old.argmax(0)).float().mean())
    return 1.0


def old_predict_logits(predictor, model_input):
    """The forward pass before: nnU-Net's own entry point."""
    return predictor.predict_logits_from_preprocessed_data(model_input).cpu()


def _model_dir(root: Path, group: int) -> Path:
    """The group's model folder, from its marker (paths relative to the marker: a copied run finds its models)."""
    from cadsflow.specialists.train import read_marker

    return Path(read_marker(root / "results" / "specialists" / "models" / f"{group}.done")["model_dir"])


def _volumes(root: Path, limit: int) -> list[Path]:
    """Up to `limit` standardized images, taken in turn from each demo source (head, torso and whole-body sizes)."""
    batches = sorted((root / "results" / "standardized").glob("*"))
    by_source = [sorted(batch.glob("*/image.nii.gz")) for batch in batches]
    chosen = []
    while len(chosen) < limit and any(by_source):
        for images in by_source:
            if images and len(chosen) < limit:
                chosen.append(images.pop(0))
    return chosen


def _mean_dice(a, b, np) -> float:
    labels = sorted(set(np.unique(a)) | set(np.unique(b)) - {0})
    if not labels:
        return 1.0
    return float(np.mean([2 * np.sum((a == v) & (b == v)) / (np.sum(a == v) + np.sum(b == v)) for v in labels]))


def _ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}" if old > 0 else "-"


if __name__ == "__main__":
    sys.exit(main())
