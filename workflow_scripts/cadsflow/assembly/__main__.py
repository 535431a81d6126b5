"""python -m cadsflow.assembly: the assembly rules' command lines (thin; the work is in the package).

  batch: assemble one batch of volumes, for each given group (merge, ground-truth override, rib refinement for the
         rib group); writes results/assembled/{group}/{batch}/{volume_id}.nii.gz and .provenance.tsv (the job's
         declared folder of each group, created even when empty), and one provenance table of the batch (all its
         groups). A flavor's predictions may lie in several folders (one per prediction job): repeat
         --flavor-dir. One job per batch keeps the DAG at ~240 jobs for 22,022 volumes.
         While it runs, a marker <batch provenance>.running lies beside the table; a run that finds it (the last
         one was killed) keeps every map whose stored fingerprint is current (volume.py) and redoes the rest.
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
    args = build_parser().parse_args(argv)
    with to_log_if(args.log):
        if not args.log:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return _batch(args) if args.command == "batch" else _card(args)


def build_parser() -> argparse.ArgumentParser:
    """The command line of both subcommands (the rules build their words with cadsflow.assembly.dag)."""
    parser = argparse.ArgumentParser(prog="python -m cadsflow.assembly", description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="append logging to this file")
    commands = parser.add_subparsers(dest="command", required=True)
    batch = commands.add_parser("batch", help="assemble one batch of volumes, group by group")
    batch.add_argument("--groups", type=int, nargs="+", required=True,
                       help="groups to assemble (the spine group is done before the rib group)")
    batch.add_argument("--volumes", nargs="+", required=True, help="volume ids of the batch")
    batch.add_argument("--flavor", action="append", default=[], metavar="NAME=DIR",
                       help="a flavor's prediction folder (<volume_id>.nii.gz), {group} standing for the group; "
                            "repeat per flavor")
    batch.add_argument("--flavor-dir", nargs=3, action="append", default=[], metavar=("GROUP", "NAME", "DIR"),
                       help="a flavor's prediction folder of one group (wins over --flavor); repeatable, also for "
                            "the same group and flavor (its maps in several prediction jobs' folders)")
    batch.add_argument("--priority", required=True, help="results/ranking/priority.tsv")
    batch.add_argument("--gt-shares", help="TSV structure, gt_share (when the priority table has no gt_share)")
    batch.add_argument("--gt-dirs", nargs="+",
                       help=f"per volume (aligned with --volumes) its results/gt/<batch>/<volume_id> folder or {NONE}")
    batch.add_argument("--gt-batch", help="the batch's results/gt/<batch> folder: a volume's ground truth is its "
                                          "<volume_id> folder there, if any (instead of --gt-dirs)")
    batch.add_argument("--standardized", help="the batch's results/standardized/<batch> folder: volumes whose "
                                              "record is not ok get a quarantine line and no map; the rib group's "
                                              "CT is <volume_id>/image.nii.gz there unless --images")
    batch.add_argument("--out-dir", required=True,
                       help="results/assembled/{group}/<batch> ({group} stands for the group)")
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
    card.add_argument("--maps-root", help="results/assembled: files.tsv lists <maps-root>/<group>/<batch>/"
                                          "<volume_id>.nii.gz, the batch being each provenance table's name")
    return parser


def _batch(args) -> int:
    from cadsflow.assembly.blocks import ASSEMBLY_YAML, blocks_of_group, load_blocks, load_flavors
    from cadsflow.assembly.merge import read_gt_shares, read_priority
    from cadsflow.assembly.provenance import write_provenance
    from cadsflow.assembly.ribs import load_rib_settings
    from cadsflow.assembly.volume import assemble_batch

    from cadsflow.pseudolabel.infer import running_marker

    config = args.config or ASSEMBLY_YAML
    settings = load_rib_settings(config)
    blocks, flavors = load_blocks(config), load_flavors(config)
    if len(args.groups) > 1 and "{group}" not in args.out_dir:
        raise SystemExit("--out-dir must contain {group} when several groups are assembled")
    if not args.flavor and not args.flavor_dir:
        raise SystemExit("give the flavors' prediction folders with --flavor or --flavor-dir")
    gt_dirs = _gt_dirs(args)
    quarantined = _quarantined(args.standardized, args.volumes) if args.standardized else {}
    shares = read_gt_shares(args.gt_shares) if args.gt_shares else None
    marker = running_marker(args.batch_provenance)
    resume = marker.is_file()
    if resume:
        logging.info("%s: the last run of this batch was interrupted; maps with a current fingerprint are kept",
                     marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("running\n")
    rows = []
    for group in sorted(set(args.groups), key=lambda g: (g == settings.group, g)):  # spine before ribs
        out_dir = args.out_dir.format(group=group)
        ribs = _rib_inputs(args, settings) if group == settings.group else None
        rows += assemble_batch(args.volumes, group, flavor_dirs_of(args, group),
                               read_priority(args.priority, group, shares), gt_dirs, out_dir,
                               blocks_of_group(blocks, group), flavors, settings, ribs, quarantined=quarantined,
                               resume=resume)
    write_provenance(rows, args.batch_provenance)
    marker.unlink(missing_ok=True)
    return 0


def flavor_dirs_of(args, group: int) -> dict[str, list[str]]:
    """The flavors' prediction folders of one group: --flavor templates, replaced by the --flavor-dir folders of the
    group (all of them, in the order given)."""
    dirs = {name: [template.format(group=group)] for name, template in (_pair(t, "--flavor") for t in args.flavor)}
    own: dict[str, list[str]] = {}
    for g, name, folder in args.flavor_dir:
        if _int(g, "--flavor-dir GROUP") == group:
            own.setdefault(name, []).append(folder)
    return dirs | own


def _card(args) -> int:
    from cadsflow.assembly.card import read_training_counts, training_counts_from_datasets, write_card
    from cadsflow.assembly.provenance import read_provenance

    counts = read_training_counts(args.training_counts) if args.training_counts else {}
    for stage, groups in training_counts_from_datasets(args.dataset_json).items():
        counts.setdefault(stage, {}).update(groups)
    tables = {Path(path).stem: read_provenance(path) for path in args.provenance}
    rows = [row for batch_rows in tables.values() for row in batch_rows]
    write_card(rows, counts, args.out_dir, maps_root=args.maps_root, batches=tables)
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
    if args.images:
        images = [Path(p) for p in _aligned(args.images, n, "--images")]
    elif args.standardized:
        images = [Path(args.standardized) / v / "image.nii.gz" for v in args.volumes]
    else:
        images = [None] * n
    return [RibInputs(spine_map=s, image=i, tubular_map=t) for s, i, t in zip(spines, images, tubular)]


def _gt_dirs(args) -> list[str | None]:
    n = len(args.volumes)
    if args.gt_dirs and args.gt_batch:
        raise SystemExit("give either --gt-dirs or --gt-batch, not both")
    if args.gt_dirs:
        return [None if d == NONE else d for d in _aligned(args.gt_dirs, n, "--gt-dirs")]
    if args.gt_batch:
        return [str(Path(args.gt_batch) / v) if (Path(args.gt_batch) / v).is_dir() else None for v in args.volumes]
    return [None] * n


def _quarantined(batch_dir: str, volume_ids) -> dict[str, str]:
    """Volume id -> reason, for the volumes whose standardization record is not ok."""
    from cadsflow.standardize import read_record

    out = {}
    for volume_id in volume_ids:
        folder = Path(batch_dir) / volume_id
        try:
            record = read_record(folder)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"volume {volume_id}: cannot read its standardization record in {folder} "
                             f"({exc})") from None
        if record.get("status") != "ok":
            out[volume_id] = f"{record.get('status', 'unknown')}: {record.get('reason', '')}"
    return out


def _int(text: str, option: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"{option}: expected a group id, got {text!r}") from None


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
