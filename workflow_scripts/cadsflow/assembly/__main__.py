"""python -m cadsflow.assembly: the assembly rules' command lines (thin; the work is in the package).

  batch: assemble one batch of volumes, for each given group (merge, ground-truth override, rib refinement for the
         rib group); writes results/assembled/{group}/{volume_id}.nii.gz and .provenance.tsv, and one provenance
         table of the batch (all its groups). One job per batch keeps the DAG at ~240 jobs for 22,022 volumes.
  card:  the dataset card from the batches' provenance tables and the training image counts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cadsflow.logs import to_log_if

NONE = "none"  # placeholder in an aligned list for "this volume has none"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.assembly", description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="append logging to this file")
    commands = parser.add_subparsers(dest="command", required=True)
    batch = commands.add_parser("batch", help="assemble one batch of volumes, group by group")
    batch.add_argument("--groups", type=int, nargs="+", required=True,
                       help="groups to assemble (the spine group is done before the rib group)")
    batch.add_argument("--volumes", nargs="+", required=True, help="volume ids of the batch")
    batch.add_argument("--flavor", action="append", required=True, metavar="NAME=DIR",
                       help="a flavor's prediction folder (<volume_id>.nii.gz), {group} standing for the group; "
                            "repeat per flavor")
    batch.add_argument("--priority", required=True, help="results/ranking/priority.tsv")
    batch.add_argument("--gt-shares", help="TSV structure, gt_share (when the priority table has no gt_share)")
    batch.add_argument("--gt-dirs", nargs="+", required=True,
                       help=f"per volume (aligned with --volumes) its results/gt/<batch>/<volume_id> folder or {NONE}")
    batch.add_argument("--out-dir", required=True, help="results/assembled/{group} ({group} stands for the group)")
    batch.add_argument("--batch-provenance", required=True, help="provenance table of the batch, all groups (TSV)")
    batch.add_argument("--spine-maps", nargs="+",
                       help="rib group: per volume the assembled spine group's map (default: this call's output of "
                            "the spine group, when it is among --groups)")
    batch.add_argument("--images", nargs="+",
                       help="rib group: per volume the standardized CT (for the vesselness map)")
    batch.add_argument("--tubular-maps", nargs="+",
                       help=f"rib group: per volume an external tubular map or {NONE} "
                            "(default: config ribs.tubular_map)")
    batch.add_argument("--config", help="assembly config (default: config/assembly.yaml)")
    card = commands.add_parser("card", help="the dataset card")
    card.add_argument("--provenance", nargs="+", required=True, help="the batches' provenance tables")
    card.add_argument("--training-counts", help="TSV with columns stage, group, n_images")
    card.add_argument("--dataset-json", nargs=3, action="append", default=[], metavar=("STAGE", "GROUP", "PATH"),
                      help="an nnU-Net dataset.json whose numTraining is the stage's count for the group; repeatable")
    card.add_argument("--out-dir", required=True, help="results/assembled/dataset_card")
    args = parser.parse_args(argv)
    with to_log_if(args.log):
        if not args.log:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return _batch(args) if args.command == "batch" else _card(args)


def _batch(args) -> int:
    from cadsflow.assembly.blocks import ASSEMBLY_YAML, blocks_of_group, load_blocks, load_flavors
    from cadsflow.assembly.merge import read_gt_shares, read_priority
    from cadsflow.assembly.provenance import write_provenance
    from cadsflow.assembly.ribs import load_rib_settings
    from cadsflow.assembly.volume import assemble_batch

    config = args.config or ASSEMBLY_YAML
    flavor_dirs = dict(_pair(text, "--flavor") for text in args.flavor)
    settings = load_rib_settings(config)
    blocks, flavors = load_blocks(config), load_flavors(config)
    if len(args.groups) > 1 and "{group}" not in args.out_dir:
        raise SystemExit("--out-dir must contain {group} when several groups are assembled")
    gt_dirs = [None if d == NONE else d for d in _aligned(args.gt_dirs, len(args.volumes), "--gt-dirs")]
    shares = read_gt_shares(args.gt_shares) if args.gt_shares else None
    rows = []
    for group in sorted(set(args.groups), key=lambda g: (g == settings.group, g)):  # spine before ribs
        out_dir = args.out_dir.format(group=group)
        ribs = _rib_inputs(args, settings) if group == settings.group else None
        dirs = {f: d.format(group=group) for f, d in flavor_dirs.items()}
        rows += assemble_batch(args.volumes, group, dirs, read_priority(args.priority, group, shares), gt_dirs,
                               out_dir, blocks_of_group(blocks, group), flavors, settings, ribs)
    write_provenance(rows, args.batch_provenance)
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


def _rib_inputs(args, settings):
    from cadsflow.assembly.volume import RibInputs

    n = len(args.volumes)
    if args.spine_maps:
        spines = [Path(p) for p in _aligned(args.spine_maps, n, "--spine-maps")]
    elif settings.spine_group in args.groups:
        spine_dir = Path(args.out_dir.format(group=settings.spine_group))
        spines = [spine_dir / f"{v}.nii.gz" for v in args.volumes]
    else:
        raise SystemExit(f"the rib group {settings.group} needs --spine-maps or the spine group "
                         f"{settings.spine_group} among --groups")
    if args.tubular_maps:
        tubular = [None if p == NONE else Path(p) for p in _aligned(args.tubular_maps, n, "--tubular-maps")]
    elif settings.tubular_map is not None:  # config ribs.tubular_map: a template with {volume_id}
        tubular = [Path(settings.tubular_map.format(volume_id=v)) for v in args.volumes]
    else:
        tubular = [None] * n
    images = [Path(p) for p in _aligned(args.images, n, "--images")] if args.images else [None] * n
    return [RibInputs(spine_map=s, image=i, tubular_map=t) for s, i, t in zip(spines, images, tubular)]


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
