"""What the learning proof (bench_learning.py) can reach at best: group 559's training truth and the grids it passes.

    .venv/bin/python workflow_scripts/benchmarks/bench_learning_truth.py [--results results] [--spacing 4.5 3.0]

Group 559's ground truth in the demo is two SAROS-like volumes annotated on every 5th axial slice, made dense by the
gt stage (cadsflow.gt.sparse, shape-based interpolation; Online Methods 2.1). A model trained on it cannot beat it,
so before tuning the learn preset this prints, per structure of group 559, Dice against the phantom generator's
complete truth (cadsflow.phantom, regenerated as cadsflow.demo renders it) on each volume's original grid:

- gt: the gt stage's label map (results/gt/<batch>/<volume>/group_559.nii.gz, standardized grid) restored through
  the factory's own inverse (cadsflow.standardize.restore_label); the truth the specialist trains on;
- key slices: the same, scored only on the annotated (key) slices, where nothing is interpolated; below 1.0 there
  means the mapping or the restore path loses something, not the interpolation;
- a model at S mm, per --spacing: the phantom truth, painted into one label map in the label order of group 559
  (later labels over earlier, as the demo writes its sources' labels; the masks overlap), taken to an isotropic S mm grid and back, as a perfect
  model at the learn preset's target spacing would predict it through both export paths of the preset's
  label_resampling: `nearest` (majority label per S mm voxel, labels upsampled by nearest neighbour) and
  `probabilities` (each class's S mm voxel fraction upsampled linearly, then argmax, like nnU-Net's export). This
  is the ceiling the target spacing sets, independent of training.
Also prints each structure's truth volume (ml), so the 50 ml rule of bench_learning.py can be read off, and, for
every demo volume the learning proof scores (all sources, their own spacings and orientations), the restore path's
own loss: the painted truth taken to the standardized grid as standardization takes a label map (reorientation,
nearest-neighbour resampling at the record's steps), then back through restore_label, Dice per structure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_truth_dice import demo_volumes, dice  # noqa: E402

from cadsflow.demo import DEMO_COHORT_YAML  # noqa: E402
from cadsflow.gt.sparse import SAROS_SLICE_STEP  # noqa: E402
from cadsflow.imageio import read_volume  # noqa: E402
from cadsflow.labels import load_label_space  # noqa: E402
from cadsflow.resample import resample  # noqa: E402
from cadsflow.standardize import restore_label  # noqa: E402

GROUP = 559
SOURCE = "demo_saros"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="a demo run's results folder")
    parser.add_argument("--spacing", type=float, nargs="*", default=[4.5, 3.0], help="model grids to bound (mm)")
    args = parser.parse_args(argv)
    labels_of = load_label_space().group_label_map(GROUP)
    for volume_id, masks in demo_volumes(DEMO_COHORT_YAML):
        if not volume_id.startswith(SOURCE):
            continue
        record = json.loads(next(args.results.glob(f"standardized/*/{volume_id}/record.json")).read_text())
        gt_path = next(args.results.glob(f"gt/*/{volume_id}/group_{GROUP}.nii.gz"), None)
        spacing = np.abs(np.diag(np.asarray(record["geometry"]["original_affine"]))[:3])
        voxel_ml = float(np.prod(spacing)) / 1000.0
        truth = {name: masks[name] for name in labels_of if name in masks and masks[name].any()}
        columns = {}
        if gt_path is not None:
            gt, _ = restore_label(read_volume(gt_path).data, record["geometry"])
            keys = key_slices(record, gt.shape)
            columns["gt"] = {n: dice(gt == labels_of[n], m) for n, m in truth.items()}
            columns["key slices"] = {n: dice(gt[..., keys] == labels_of[n], m[..., keys]) for n, m in truth.items()}
        for s in args.spacing:
            for kind in ("nearest", "probabilities"):
                pred = round_trip(truth, labels_of, spacing, s, kind)
                columns[f"{s:g}mm {kind[:5]}"] = {n: dice(pred == labels_of[n], m) for n, m in truth.items()}
        role = "gt" if gt_path is not None else "no gt (test case)"
        print(f"\n{volume_id} ({role}; {record['geometry']['original_shape']} voxels of {spacing.tolist()} mm)")
        print(f"{'structure':<22}{'ml':>8}" + "".join(f"{c:>15}" for c in columns))
        for name in sorted(truth, key=lambda n: -truth[n].sum()):
            print(f"{name:<22}{truth[name].sum() * voxel_ml:>8.1f}" + "".join(f"{columns[c][name]:>15.3f}"
                                                                             for c in columns))
        large = [n for n in truth if truth[n].sum() * voxel_ml > 50.0]
        print(f"{'mean over 50 ml':<30}" + "".join(f"{np.mean([columns[c][n] for n in large]):>15.3f}"
                                                   for c in columns))
    print_restore_loss(args.results, labels_of)
    return 0


def print_restore_loss(results: Path, labels_of: dict[str, int]) -> None:
    """Per source: mean Dice per structure of the painted truth after standardize -> restore_label (see docstring)."""
    per_source: dict[str, dict[str, list[float]]] = {}
    for volume_id, masks in demo_volumes(DEMO_COHORT_YAML):
        geometry = json.loads(next(results.glob(f"standardized/*/{volume_id}/record.json")).read_text())["geometry"]
        truth = {n: masks[n] for n in labels_of if n in masks and masks[n].any()}
        painted = np.zeros(geometry["original_shape"], dtype=np.uint8)
        for n, m in truth.items():
            painted[m] = labels_of[n]
        standardized = resample(nib.orientations.apply_orientation(painted, np.asarray(geometry["orientation"])),
                                np.asarray(geometry["spacing_mm"]) / np.asarray(geometry["zooms"]),
                                geometry["output_shape"], "nearest")
        restored, _ = restore_label(standardized, geometry)
        scores = per_source.setdefault(volume_id.rsplit("_case", 1)[0], {})
        for n, m in truth.items():
            scores.setdefault(n, []).append(dice(restored == labels_of[n], m))
    names = list(labels_of)
    print("\nrestore path: painted truth -> standardized grid -> restore_label, mean Dice vs the phantom masks")
    shown = [n for n in names if any(n in s for s in per_source.values())]
    print(f"{'source':<18}" + "".join(f"{n[:12]:>13}" for n in shown))
    for source, scores in per_source.items():
        print(f"{source:<18}" + "".join(f"{np.mean(scores[n]):>13.3f}" if n in scores else f"{'-':>13}" for n in shown))


def key_slices(record: dict, shape) -> np.ndarray:
    """Original-grid axial slices that the source annotated: those of the raw label without the unannotated value."""
    raw = read_volume(record["label"]).data if Path(record["label"]).is_file() else None
    if raw is not None:
        return np.flatnonzero(~(raw == 255).any(axis=(0, 1)))
    return np.arange(0, shape[2], SAROS_SLICE_STEP)  # the demo writer's pattern when its raw label is gone


def round_trip(truth: dict[str, np.ndarray], labels_of: dict[str, int], spacing, target_mm: float,
               kind: str) -> np.ndarray:
    """The truth as a perfect model on an isotropic `target_mm` grid would return it to the original grid."""
    shape = next(iter(truth.values())).shape
    names = list(truth)
    painted = np.zeros(shape, dtype=np.uint8)  # one label per voxel, later labels over earlier (cadsflow.demo._paint)
    for i, n in enumerate(names):
        painted[truth[n]] = i + 1
    onehot = np.stack([painted == i for i in range(len(names) + 1)]).astype(np.float32)
    coarse_shape = tuple(max(1, round(n * sp / target_mm)) for n, sp in zip(shape, spacing))
    small = np.stack([_resize_linear(c, coarse_shape) for c in onehot])  # each class sampled linearly
    if kind == "nearest":
        up = _resize_nearest(small.argmax(axis=0), shape)
    else:
        up = np.stack([_resize_linear(c, shape) for c in small]).argmax(axis=0)
    values = np.asarray([0] + [labels_of[n] for n in names])
    return values[up]


def _coordinates(shape_in, shape_out) -> np.ndarray:
    """Input-grid index of each output voxel centre, edge-aligned like skimage.transform.resize (nnU-Net's)."""
    axes = [(np.arange(o) + 0.5) * i / o - 0.5 for i, o in zip(shape_in, shape_out)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _resize_linear(a: np.ndarray, shape) -> np.ndarray:
    return ndimage.map_coordinates(a, _coordinates(a.shape, shape), order=1, mode="nearest")


def _resize_nearest(a: np.ndarray, shape) -> np.ndarray:
    return ndimage.map_coordinates(a, _coordinates(a.shape, shape), order=0, mode="nearest")


if __name__ == "__main__":
    raise SystemExit(main())
