"""Pseudo-labels of a finished demo run against the phantoms' complete truth, per specialist group.

    .venv/bin/python workflow_scripts/benchmarks/demo_truth_dice.py [--results results] [--json out.json]

The demo sources label only part of their anatomy, but the generator (cadsflow.phantom) knows every structure
of every volume. This script regenerates each volume's masks from config/demo_cohort.yaml (same seeds as
cadsflow.demo), restores each group's pseudo-label from the standardized grid to the volume's original grid
(cadsflow.standardize.restore_label, the factory's own inverse), and prints per group: the structures scored
(present in the truth), mean and median Dice, and how many structures were predicted at all. A smoke model is
not accurate; the figures show that labels land on the right structures and orientation once trained longer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from cadsflow.demo import DEMO_COHORT_YAML
from cadsflow.imageio import read_volume
from cadsflow.labels import load_label_space
from cadsflow.phantom import make_grid, make_phantom
from cadsflow.pseudolabel.infer import read_label_maps
from cadsflow.standardize import restore_label

GROUPS = range(551, 560)


def demo_volumes(spec_path: Path):
    """(volume_id, full truth masks) per demo volume, rendered as cadsflow.demo renders them."""
    spec = yaml.safe_load(spec_path.read_text())
    for index, (name, src) in enumerate(spec["sources"].items()):
        seed = spec["seed"] + 1000 * index
        for case_index, region in enumerate(src["regions"]):
            grid = make_grid(region, spacing=src["spacing"], orientation=src["orientation"])
            _, masks = make_phantom(grid, seed + case_index)
            yield f"{name}_case{case_index:03d}", masks


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else float("nan")


def score(results: Path, spec_path: Path) -> tuple[dict[int, list[float]], dict[int, int]]:
    space = load_label_space()
    per_group: dict[int, list[float]] = {g: [] for g in GROUPS}
    predicted: dict[int, int] = {g: 0 for g in GROUPS}
    status = results / "pseudolabels" / "status.tsv"
    if not status.is_file():
        raise SystemExit(f"{status}: missing; run the demo first")
    maps = read_label_maps(status, results.parent)  # each map in its shard's folder, named by the status table
    for volume_id, masks in demo_volumes(spec_path):
        records = list(results.glob(f"standardized/*/{volume_id}/record.json"))
        if len(records) != 1:
            raise SystemExit(f"{results}/standardized: expected one record of {volume_id}, found {len(records)}")
        geometry = json.loads(records[0].read_text())["geometry"]
        for group in GROUPS:
            path = maps.get((str(group), volume_id))
            if path is None or not path.is_file():
                raise SystemExit(f"{status}: no label map of {volume_id} for group {group} ({path})")
            labels, _ = restore_label(read_volume(path).data, geometry)
            for structure, label_id in space.group_label_map(group).items():
                truth = masks.get(structure)
                if truth is None or not truth.any():
                    continue
                pred = labels == label_id
                predicted[group] += int(pred.any())
                per_group[group].append(dice(pred, truth))
    return per_group, predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--cohort", type=Path, default=DEMO_COHORT_YAML)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    per_group, predicted = score(args.results, args.cohort)
    print(f"{'group':>5} {'pairs':>6} {'predicted':>9} {'mean Dice':>9} {'median':>7}")
    summary = {}
    for group, values in per_group.items():
        mean = float(np.mean(values)) if values else float("nan")
        median = float(np.median(values)) if values else float("nan")
        summary[group] = {"pairs": len(values), "predicted": predicted[group], "mean": mean, "median": median}
        print(f"{group:>5} {len(values):>6} {predicted[group]:>9} {mean:>9.3f} {median:>7.3f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
