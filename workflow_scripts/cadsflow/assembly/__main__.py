"""python -m cadsflow.assembly: the assembly rules' command lines (thin; the work is in the package).

  batch: assemble one batch of volumes of one group (merge, ground-truth override, rib refinement for the rib
         group); writes {out-dir}/{volume_id}.nii.gz, {volume_id}.provenance.tsv and the batch's provenance table.
  card:  the dataset card from the batches' provenance tables and the training image counts.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from cadsflow.logs import to_log

NONE = "none"  # placeholder in an aligned list for "this volume has none"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.assembly", description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="append logging to this file")
    commands = parser.add_subparsers(dest="command", required=True)
    batch = commands.add_parser("batch", help="assemble one batch of volumes of one group")
    batch.add_argument("--group", type=int, required=True)
    batch.add_argument("--volumes", nargs="+", required=True, help="volume ids of the batch")
    batch.add_argument("--flavor", action="append", required=True, metavar="NAME=DIR",
                       help="a flavor's prediction folder of this group (<volume_id>.nii.gz); repeat per flavor")
    batch.add_argument("--priority", required=True, help="results/ranking/priority.tsv")
    batch.add_argument("--gt-dirs", nargs="+", required=True,
                       help=f"per volume (aligned with --volumes) its results/gt/<batch>/<volume_id> folder or {NONE}")
    batch.add_argument("--out-dir", required=True, help="results/assembled/<group>")
    batch.add_argument("--batch-provenance", required=True, help="provenance table of the whole batch (TSV)")
    batch.add_argument("--spine-maps", nargs="+",
                       help="rib group only: per volume the assembled spine group's map (aligned with --volumes)")
    batch.add_argument("--images", nargs="+",
                       help="rib group only: per volume the standardized CT (for the vesselness map)")
    batch.add_argument("--tubular-maps", nargs="+",
                       help="rib group only: per volume an external tubular map (instead of --images)")
    batch.add_argument("--config", help="assembly config (default: config/assembly.yaml)")
    card = commands.add_parser("card", help="the dataset card")
    card.add_argument("--provenance", nargs="+", required=True, help="the batches' provenance tables")
    card.add_argument("--training-counts", help="TSV with columns stage, group, n_images")
    card.add_argument("--dataset-json", nargs=3, action="append", default=[], metavar=("STAGE", "GROUP", "PATH"),
                      help="an nnU-Net dataset.json whose numTraining is the stage's count for the group; repeatable")
    card.add_argument("--out-dir", required=True, help="results/assembled/dataset_card")
    args = parser.parse_args(argv)
    with to_log(args.log) if args.log else contextlib.nullcontext():
        if not args.log:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return _batch(args) if args.command == "batch" else _card(args)


def _batch(args) -> int:
    from cadsflow.assembly.blocks import ASSEMBLY_YAML, blocks_of_group, load_blocks, load_flavors
    from cadsflow.assembly.merge import read_priority
    from cadsflow.assembly.ribs import load_rib_settings
    from cadsflow.assembly.volume import RibInputs, assemble_batch

    config = args.config or ASSEMBLY_YAML
    flavor_dirs = dict(_pair(text, "--flavor") for text in args.flavor)
    settings = load_rib_settings(config)
    rib_inputs = None
    if args.group == settings.group:
        rib_inputs = _rib_inputs(args, settings, RibInputs)
    assemble_batch(args.volumes, args.group, flavor_dirs, read_priority(args.priority, args.group),
                   [None if d == NONE else d for d in args.gt_dirs], args.out_dir, args.batch_provenance,
                   blocks_of_group(load_blocks(config), args.group), load_flavors(config), settings, rib_inputs)
    return 0


def _card(args) -> int:
    from cadsflow.assembly.card import read_training_counts, training_counts_from_datasets, write_card
    from cadsflow.assembly.provenance import read_provenance

    counts = read_training_counts(args.training_counts) if args.training_counts else {}
    for stage, groups in training_counts_from_datasets(args.dataset_json).items():
        counts.setdefault(stage, {}).update(groups)
    rows = [row for path in args.provenance for row in read_provenance(path)]
    write_card(rows, counts, args.out_dir)
    return 0


def _rib_inputs(args, settings, make):
    n = len(args.volumes)
    spines = _aligned(args.spine_maps, n, "--spine-maps")
    if settings.tubular_map is not None:  # config ribs.tubular_map: a template with {volume_id}
        tubular = [Path(settings.tubular_map.format(volume_id=v)) for v in args.volumes]
    else:
        tubular = [None if p == NONE else Path(p) for p in args.tubular_maps] if args.tubular_maps else [None] * n
    images = [Path(p) for p in _aligned(args.images, n, "--images")] if args.images else [None] * n
    if len(tubular) != n:
        raise SystemExit(f"--tubular-maps: {len(tubular)} paths for {n} volumes")
    return [make(spine_map=Path(s), image=i, tubular_map=t) for s, i, t in zip(spines, images, tubular)]


def _aligned(values, n: int, option: str) -> list[str]:
    if not values or len(values) != n:
        raise SystemExit(f"{option}: expected {n} paths aligned with --volumes, got {len(values or [])}")
    return values


def _pair(text: str, option: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise SystemExit(f"{option}: expected NAME=DIR, got {text!r}")
    return name, value


if __name__ == "__main__":
    sys.exit(main())
