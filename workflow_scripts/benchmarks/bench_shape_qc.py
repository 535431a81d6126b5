#!/usr/bin/env python
"""Benchmark: does the shape-prior QC (cadsflow.shape_qc, Online Methods 2.2) rank corrupted pseudo-labels worst?

Setup. A group's prior is trained on clean phantom label maps (cadsflow.phantom, generator seeds TRAIN_SEED0...),
then phantom label maps of other subjects (seeds TEST_SEED0...) are scored: each test subject once clean and once
per corruption type, every corruption applied to one structure (or one left/right pair) chosen at random:
  shift     the structure moved by >= 10 mm (whole voxels) in a random direction; it overwrites what it lands on
  lr_swap   a left/right pair's labels exchanged
  truncate  the half of the structure beyond its centre along a random axis removed
  fragment  a copy of 30% of the structure (a slab at one end) placed >= 60 mm away: the fragment holds
            23% of the structure's voxels
  missing   the structure deleted
  dilate3   the structure grown by a ball of 3 voxels (no threshold: HD90 should see it, a centroid not)
  blobs     three small balls (7 voxels each) of the structure's label scattered >= 30 mm away (no threshold:
            HD90 is meant to tolerate a few far-off voxels)
All volumes of the run are one cohort: image scores (exclude.image_scores) are computed over all of them, as they
would be over a group's pseudo-labels. For each corruption the AUROC says how well the image score separates the
corrupted volumes from the clean ones (1.0: every corrupted one scores worse than every clean one). Target >= 0.90
for shift, lr_swap, truncate, fragment, missing.

Baseline, measured in the same run: the distance of each structure's centroid from its mean position over the
training maps (in the same frame: mm from the group's foreground centroid; a missing structure scores the image
diagonal, as in the QC), combined into an image score the same way.

Run by hand (2 CPU cores: a few minutes), e.g.
``nice -n 15 .venv/bin/python workflow_scripts/benchmarks/bench_shape_qc.py`` (--help for the sizes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow_scripts"))

from cadsflow.evaluation.metrics import bounding_box_diagonal_mm  # noqa: E402
from cadsflow.phantom import make_grid, make_phantom  # noqa: E402
from cadsflow.shape_qc.exclude import COMBINE_METHODS, image_scores  # noqa: E402
from cadsflow.shape_qc.presets import load_preset  # noqa: E402
from cadsflow.shape_qc.sampling import foreground_centroid_mm  # noqa: E402
from cadsflow.shape_qc.score import score_label_map  # noqa: E402
from cadsflow.shape_qc.score_table import SCORE_COLUMNS  # noqa: E402
from cadsflow.shape_qc.train import group_structures, train_prior  # noqa: E402

TRAIN_SEED0, TEST_SEED0 = 1000, 5000  # generator seeds of training and scored subjects never overlap
CLEAN = "clean"
TARGETED = ("shift", "lr_swap", "truncate", "fragment", "missing")  # AUROC >= 0.90 asked for these
REPORTED = ("dilate3", "blobs")  # reported without a threshold
TARGET_AUROC = 0.90
SPACING_MM = 1.5  # the standardized grid
SHIFT_MM = 10.0
FRAGMENT_SHARE = 0.30  # copied share of the structure: 0.30 / 1.30 = 23% of its voxels afterwards
FRAGMENT_DISTANCE_MM = 60.0
BLOB_COUNT, BLOB_MIN_DISTANCE_MM = 3, 30.0
DILATION_VOXELS = 3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", type=int, default=551, help="group whose label maps are used (default 551)")
    parser.add_argument("--region", default="torso", help="phantom field of view (cadsflow.phantom.REGIONS)")
    parser.add_argument("--train", type=int, default=10, help="training subjects")
    parser.add_argument("--test", type=int, default=8, help="scored subjects (each clean + once per corruption)")
    parser.add_argument("--preset", default="demo", help="preset of config/shape_qc.yaml")
    parser.add_argument("--epochs", type=int, help="override the preset's training epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scores-out", type=Path, help="also write the QC's score table (TSV) here")
    parser.add_argument("--gallery", type=Path, help="also draw the QC gallery of the worst volumes (PNG) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    preset = load_preset(args.preset)
    if args.epochs:
        preset = preset.with_overrides(epochs=args.epochs)
    structures = group_structures(args.group)
    t0 = time.perf_counter()
    train_maps = [phantom_label_map(args.region, TRAIN_SEED0 + i, structures)[:2] for i in range(args.train)]
    test_subjects = [phantom_label_map(args.region, TEST_SEED0 + i, structures) for i in range(args.test)]
    test_maps = [(labels, affine) for labels, affine, _ in test_subjects]
    grid_shape = train_maps[0][0].shape
    print(f"group {args.group}, region {args.region} {grid_shape} at 1.5 mm; {args.train} training and {args.test} "
          f"scored subjects (phantoms built in {time.perf_counter() - t0:.1f} s); preset {args.preset} "
          f"(epochs {preset.epochs}, recon steps {preset.recon_steps}), {args.threads} torch threads")

    prior, stats = train_prior([(f"train{i}", lab, aff) for i, (lab, aff) in enumerate(train_maps)], args.group,
                               structures, preset, seed=args.seed, threads=args.threads, preset_name=args.preset)
    known = [s for s, k in zip(structures, prior.meta.known) if k]
    print(f"training: {stats.seconds:.1f} s for {len(train_maps)} maps ({stats.steps} steps, "
          f"{stats.seconds / len(train_maps):.2f} s per map); structures present: {len(known)}: {', '.join(known)}")

    cohort = corrupted_cohort(test_maps, structures, args.seed)
    rows, seconds, fit = [], [], []
    for volume_id, kind, labels, affine in cohort:
        start = time.perf_counter()
        volume_rows, recon = score_label_map(prior, labels, affine, volume_id, preset, seed=args.seed)
        seconds.append(time.perf_counter() - start)
        rows.extend(volume_rows)
        if recon is not None and kind == CLEAN:
            fit.append((recon.loss_initial, recon.loss_final))
    scores = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    kinds = {volume_id: kind for volume_id, kind, _, _ in cohort}
    if args.scores_out:
        scores.to_csv(args.scores_out, sep="\t", index=False)
    start_loss, end_loss = np.mean(fit, axis=0)
    print(f"scoring: {len(cohort)} volumes, {np.mean(seconds):.2f} s per volume (max {np.max(seconds):.2f} s); "
          f"clean fits: loss of the mean code {start_loss:.3f} -> fitted {end_loss:.3f}")
    clean = scores[scores["volume_id"].map(kinds) == CLEAN]
    ok = clean[clean["status"] == "ok"]
    print("clean HD90 (mm) per structure, median [max]: " + ", ".join(
        f"{s} {g.median():.1f} [{g.max():.1f}]" for s, g in ok.groupby("structure", sort=False)["hd90_mm"]))

    baseline = centroid_baseline(train_maps, cohort, structures)
    print()
    print(f"{'corruption':<10} " + " ".join(f"{'QC ' + m:>18}" for m in COMBINE_METHODS)
          + " " + " ".join(f"{'baseline ' + m:>24}" for m in COMBINE_METHODS) + "  target")
    results = {}
    for method in COMBINE_METHODS:
        results[("qc", method)] = image_scores(scores, method, preset.robust_z_floor_mm).set_index("volume_id")
        results[("baseline", method)] = image_scores(baseline, method, preset.robust_z_floor_mm).set_index("volume_id")
    for kind in TARGETED + REPORTED:
        cells = []
        for system in ("qc", "baseline"):
            for method in COMBINE_METHODS:
                table = results[(system, method)]
                width = 18 if system == "qc" else 24
                cells.append(f"{auroc(table, kinds, kind):>{width}.3f}")
        target = f">= {TARGET_AUROC:.2f}" if kind in TARGETED else "(none)"
        print(f"{kind:<10} " + " ".join(cells) + f"  {target}")
    default = results[("qc", preset.combine)]
    verdict = all(auroc(default, kinds, kind) >= TARGET_AUROC for kind in TARGETED)
    print(f"\nQC with the preset's combine ({preset.combine}): every targeted AUROC >= {TARGET_AUROC}: {verdict}")
    n_excluded = int(default["excluded"].sum())
    hit = sum(kinds[v] != CLEAN for v in default.index[default["excluded"]])
    print(f"the worst {preset.exclude_fraction:.0%} cut excludes {n_excluded} of {len(default)} volumes, "
          f"{hit} of them corrupted ({sum(k != CLEAN for k in kinds.values())} of the cohort are)")
    if args.gallery:
        draw_gallery(args.gallery, prior, default.reset_index(), cohort, test_subjects, preset, args.seed)


def auroc(table: pd.DataFrame, kinds: dict[str, str], kind: str) -> float:
    """P(a volume with corruption `kind` scores worse than a clean one), ties counting one half."""
    clean = table.loc[[v for v, k in kinds.items() if k == CLEAN], "image_score"].to_numpy(dtype=float)
    bad = table.loc[[v for v, k in kinds.items() if k == kind], "image_score"].to_numpy(dtype=float)
    clean, bad = np.nan_to_num(clean, nan=-np.inf), np.nan_to_num(bad, nan=-np.inf)
    greater = (bad[:, None] > clean[None, :]).mean()
    ties = (bad[:, None] == clean[None, :]).mean()
    return float(greater + 0.5 * ties)


def draw_gallery(out: Path, prior, images: pd.DataFrame, cohort, test_subjects, preset, seed: int) -> None:
    """The QC gallery of the run's worst volumes (their label maps and CTs written to a temporary folder)."""
    import tempfile

    from cadsflow.imageio import save_nifti
    from cadsflow.shape_qc.gallery import GalleryVolume, write_gallery

    worst = set(images.sort_values("rank")["volume_id"].head(preset.gallery_volumes))
    with tempfile.TemporaryDirectory() as folder:
        volumes = []
        for volume_id, _, labels, affine in cohort:
            if volume_id in worst:
                subject = int(volume_id[len("subject"):len("subject") + 2])
                save_nifti(labels, affine, Path(folder) / f"{volume_id}.nii.gz")
                save_nifti(test_subjects[subject][2], affine, Path(folder) / f"{volume_id}_ct.nii.gz")
                volumes.append(GalleryVolume(volume_id, Path(folder) / f"{volume_id}.nii.gz",
                                             Path(folder) / f"{volume_id}_ct.nii.gz"))
        shown = write_gallery(prior, images, volumes, out, preset, seed=seed)
    print(f"gallery of {', '.join(shown)}: {out}")


# -- cohort ----------------------------------------------------------------------------------------------------


def phantom_label_map(region: str, seed: int, structures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A phantom's group label map (label id k = structures[k - 1]) on a 1.5 mm RAS grid, its affine and CT."""
    grid = make_grid(region, spacing=(SPACING_MM,) * 3, orientation="RAS")
    image, masks = make_phantom(grid, seed)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    for k, name in enumerate(structures, start=1):
        if name in masks:
            labels[masks[name]] = k
    return labels, grid.affine, image


def corrupted_cohort(test_maps, structures, seed: int) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(volume_id, kind, labels, affine): every test map clean and once per corruption."""
    cohort = []
    for i, (labels, affine) in enumerate(test_maps):
        cohort.append((f"subject{i:02d}_{CLEAN}", CLEAN, labels, affine))
        for j, kind in enumerate(TARGETED + REPORTED):
            rng = np.random.default_rng([seed, i, j])
            cohort.append((f"subject{i:02d}_{kind}", kind, CORRUPTIONS[kind](labels, structures, rng), affine))
    return cohort


def _pick(labels, rng, min_voxels: int = 200) -> int:
    counts = np.bincount(labels.ravel())
    candidates = [k for k in range(1, len(counts)) if counts[k] >= min_voxels]
    return int(rng.choice(candidates))


def shift(labels, structures, rng):
    out = labels.copy()
    k = _pick(labels, rng)
    mask = labels == k
    offset = shift_offset(rng)
    out[mask] = 0
    out[np.roll(mask, tuple(offset), axis=(0, 1, 2))] = k
    return out


def shift_offset(rng) -> np.ndarray:
    """Whole-voxel offset in a random direction (uniform on the sphere), at least SHIFT_MM long."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    length = SHIFT_MM
    while True:
        offset = np.rint(direction * length / SPACING_MM).astype(int)
        if np.linalg.norm(offset) * SPACING_MM >= SHIFT_MM:
            return offset
        length += 0.25


def lr_swap(labels, structures, rng):
    present = set(np.unique(labels).tolist())
    pairs = [(structures.index(s) + 1, structures.index(s[: -len("_left")] + "_right") + 1) for s in structures
             if s.endswith("_left") and s[: -len("_left")] + "_right" in structures]
    pairs = [(a, b) for a, b in pairs if a in present and b in present]
    a, b = pairs[int(rng.integers(len(pairs)))]
    out = labels.copy()
    out[labels == a] = b
    out[labels == b] = a
    return out


def truncate(labels, structures, rng):
    out = labels.copy()
    k = _pick(labels, rng)
    idx = np.nonzero(labels == k)
    axis = int(rng.integers(3))
    cut = np.median(idx[axis])
    beyond = idx[axis] > cut if rng.random() < 0.5 else idx[axis] < cut
    out[tuple(i[beyond] for i in idx)] = 0
    return out


def fragment(labels, structures, rng):
    out = labels.copy()
    k = _pick(labels, rng)
    idx = np.array(np.nonzero(labels == k))
    distance = int(np.ceil(FRAGMENT_DISTANCE_MM / SPACING_MM))
    shape = np.array(labels.shape)
    for axis in rng.permutation(3):
        order = np.argsort(idx[axis])
        chunk = idx[:, order[: int(np.ceil(FRAGMENT_SHARE * idx.shape[1]))]]
        for sign in rng.permutation([-1, 1]):
            moved = chunk.copy()
            moved[axis] += sign * (distance + (idx[axis].max() - idx[axis].min()))
            if moved[axis].min() >= 0 and moved[axis].max() < shape[axis]:
                out[tuple(moved)] = k
                return out
    raise RuntimeError("no room in the grid for a far fragment")


def missing(labels, structures, rng):
    out = labels.copy()
    out[labels == _pick(labels, rng)] = 0
    return out


def dilate3(labels, structures, rng):
    out = labels.copy()
    k = _pick(labels, rng)
    r = DILATION_VOXELS
    offsets = np.indices((2 * r + 1,) * 3) - r
    ball = (offsets**2).sum(axis=0) <= r * r
    out[ndimage.binary_dilation(labels == k, structure=ball)] = k
    return out


def blobs(labels, structures, rng):
    out = labels.copy()
    k = _pick(labels, rng)
    mask = labels == k
    far = ndimage.distance_transform_edt(~mask, sampling=SPACING_MM) >= BLOB_MIN_DISTANCE_MM
    far[[0, -1], :, :] = far[:, [0, -1], :] = far[:, :, [0, -1]] = False
    candidates = np.flatnonzero(far)
    for flat in rng.choice(candidates, size=BLOB_COUNT, replace=False):
        c = np.unravel_index(flat, labels.shape)
        out[c] = k
        for axis in range(3):  # a 6-neighbourhood cross: 7 voxels
            for step in (-1, 1):
                p = list(c)
                p[axis] += step
                out[tuple(p)] = k
    return out


CORRUPTIONS = {"shift": shift, "lr_swap": lr_swap, "truncate": truncate, "fragment": fragment, "missing": missing,
               "dilate3": dilate3, "blobs": blobs}


# -- baseline --------------------------------------------------------------------------------------------------


def centroid_baseline(train_maps, cohort, structures) -> pd.DataFrame:
    """A score table like the QC's whose 'hd90_mm' is each structure's centroid distance from its training mean."""
    positions = np.stack([_structure_centroids(labels, affine, len(structures)) for labels, affine in train_maps])
    with np.errstate(invalid="ignore"):
        mean = np.full(positions.shape[1:], np.nan)
        seen = ~np.all(np.isnan(positions[..., 0]), axis=0)
        mean[seen] = np.nanmean(positions[:, seen], axis=0)
    rows = []
    for volume_id, _, labels, affine in cohort:
        here = _structure_centroids(labels, affine, len(structures))
        penalty = bounding_box_diagonal_mm(labels.shape, np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
        for k, name in enumerate(structures):
            if np.isnan(mean[k, 0]):
                continue
            if np.isnan(here[k, 0]):
                rows.append((volume_id, name, penalty, "missing_in_pseudolabel", ""))
            else:
                rows.append((volume_id, name, float(np.linalg.norm(here[k] - mean[k])), "ok", ""))
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def _structure_centroids(labels, affine, n) -> np.ndarray:
    """[n, 3] centroid of each structure in mm from the group's foreground centroid (NaN where absent)."""
    origin = foreground_centroid_mm(labels, affine)
    index = np.arange(1, n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ijk = np.array(ndimage.center_of_mass(np.ones(labels.shape), labels, index), dtype=float)
    return ijk @ affine[:3, :3].T + affine[:3, 3] - origin


if __name__ == "__main__":
    main()
