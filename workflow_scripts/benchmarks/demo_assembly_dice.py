"""The assembled labels of a finished demo run against the phantoms' complete truth, next to each single flavor's
predictions and the specialists' pseudo-labels, per group (issue 13's demo acceptance).

    .venv/bin/python workflow_scripts/benchmarks/demo_assembly_dice.py [--results results] [--json out.json]

The truth is demo_truth_dice.py's: each volume's masks regenerated from config/demo_cohort.yaml, every label map
restored from the standardized grid to the volume's original grid by the factory's own inverse
(cadsflow.standardize.restore_label). Systems: `assembled` (results/assembled/{group}/{batch}), each flavor
(results/flavors/predictions/{group}/<job folder: validation or part_<p>>/{flavor}) and `pseudolabels` (the
specialists). Flavors predict the test split
with every flavor but the other volumes only with the flavors the ranking selected, so the systems are compared on
the volumes where every one of them has a map of the group (`common`); `assembled*` is the assembled labels there
without the (volume, structure) pairs whose assembled voxels are the volume's own ground truth (provenance origin
ground_truth), i.e. the model part of the assembly only. Dice is over (volume, structure) pairs present in the
truth; a structure a system does not predict scores 0.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
from pathlib import Path

import numpy as np
from demo_truth_dice import GROUPS, demo_volumes, dice

from cadsflow.demo import DEMO_COHORT_YAML
from cadsflow.imageio import read_volume
from cadsflow.labels import load_label_space
from cadsflow.layout import MapIndex
from cadsflow.paths import CONFIG_DIR
from cadsflow.pseudolabel.infer import read_label_maps
from cadsflow.standardize import restore_label

ASSEMBLED, PSEUDOLABELS, ASSEMBLED_MODEL = "assembled", "pseudolabels", "assembled*"


def flavor_indexes(results: Path, group: int, flavors: list[str]) -> dict[str, MapIndex]:
    """Each flavor's maps of the group over its prediction jobs' folders (validation/, part_<p>/)."""
    root = results / "flavors" / "predictions" / str(group)
    jobs = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    return {f: MapIndex(job / f for job in jobs) for f in flavors}


def system_maps(results: Path, group: int, volume_id: str, batch: str,
                flavors: dict[str, MapIndex]) -> dict[str, Path]:
    """Each system's label map of the volume and group, where it exists."""
    paths = {ASSEMBLED: results / "assembled" / str(group) / batch / f"{volume_id}.nii.gz"}
    paths |= {f: path for f, index in flavors.items() if (path := index.get(volume_id)) is not None}
    if (pseudo := pseudolabel_maps(results).get((str(group), volume_id))) is not None:
        paths[PSEUDOLABELS] = pseudo
    return {name: p for name, p in paths.items() if p.is_file()}


@functools.cache
def pseudolabel_maps(results: Path) -> dict[tuple[str, str], Path]:
    """(group, volume_id) -> the specialists' map, each in its shard's folder, as the pseudo-label status table names
    it (results/pseudolabels/status.tsv, paths relative to the run's folder)."""
    return read_label_maps(results / "pseudolabels" / "status.tsv", results.parent)


def ground_truth_structures(results: Path, group: int, volume_id: str, batch: str) -> set[str]:
    """Structures whose assembled voxels are the volume's own ground truth (its provenance file)."""
    path = results / "assembled" / str(group) / batch / f"{volume_id}.provenance.tsv"
    if not path.is_file():
        return set()
    with open(path, newline="") as handle:
        return {r["structure"] for r in csv.DictReader(handle, delimiter="\t") if r["origin"] == "ground_truth"}


def score(results: Path, spec_path: Path, flavors: list[str]) -> dict[int, dict]:
    """Per group: volumes compared, and per system the Dice of every (volume, structure) pair on those volumes."""
    space = load_label_space()
    systems = [ASSEMBLED, ASSEMBLED_MODEL, *flavors, PSEUDOLABELS]
    out = {g: {"volumes": 0, "dice": {s: [] for s in systems}} for g in GROUPS}
    indexes = {g: flavor_indexes(results, g, flavors) for g in GROUPS}
    for volume_id, masks in demo_volumes(spec_path):
        records = list(results.glob(f"standardized/*/{volume_id}/record.json"))
        if len(records) != 1:
            raise SystemExit(f"{results}/standardized: expected one record of {volume_id}, found {len(records)}")
        geometry = json.loads(records[0].read_text())["geometry"]
        batch = records[0].parent.parent.name  # results/standardized/<batch>/<volume_id>/record.json
        for group in GROUPS:
            paths = system_maps(results, group, volume_id, batch, indexes[group])
            if len(paths) < len(systems) - 1:  # compare on volumes where every system has a map
                continue
            out[group]["volumes"] += 1
            labels = {name: restore_label(read_volume(p).data, geometry)[0] for name, p in paths.items()}
            from_gt = ground_truth_structures(results, group, volume_id, batch)
            for structure, label_id in space.group_label_map(group).items():
                truth = masks.get(structure)
                if truth is None or not truth.any():
                    continue
                for name, data in labels.items():
                    value = dice(data == label_id, truth)
                    out[group]["dice"][name].append(value)
                    if name == ASSEMBLED and structure not in from_gt:
                        out[group]["dice"][ASSEMBLED_MODEL].append(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--cohort", type=Path, default=DEMO_COHORT_YAML)
    parser.add_argument("--flavors-config", type=Path, default=CONFIG_DIR / "flavors.yaml")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import yaml

    flavors = list(yaml.safe_load(args.flavors_config.read_text())["flavors"])
    scores = score(args.results, args.cohort, flavors)
    systems = [ASSEMBLED, ASSEMBLED_MODEL, *flavors, PSEUDOLABELS]
    print("mean Dice against the phantom truth (pairs = volume x structure present in the truth)")
    print(f"{'group':>5} {'volumes':>7} {'pairs':>5} " + " ".join(f"{s:>12}" for s in systems))
    summary = {}
    for group, entry in scores.items():
        means = {s: float(np.mean(v)) if v else float("nan") for s, v in entry["dice"].items()}
        pairs = len(entry["dice"][ASSEMBLED])
        summary[group] = {"volumes": entry["volumes"], "pairs": pairs, "mean_dice": means,
                          "pairs_without_gt": len(entry["dice"][ASSEMBLED_MODEL])}
        print(f"{group:>5} {entry['volumes']:>7} {pairs:>5} " + " ".join(f"{means[s]:>12.3f}" for s in systems))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
