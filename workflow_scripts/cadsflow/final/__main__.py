"""python -m cadsflow.final counts|weights|subset|train: one step of a group's final model (Snakemake shell rules).

counts   label maps, or the assembly's provenance tables and a volume list -> the group's label-count table
         (volume id x structure -> voxels)
weights  label maps or a count table -> the group's oversampling table (structure weights, image probabilities)
subset   count tables -> a head group's training volumes, one id per line (557, 558; config/final.yaml)
train    the planned dataset and its oversampling table -> the trained final model and its marker (rule final_train)

train is a module under a __main__ guard, not a Snakemake `script:`, as the specialists' steps: nnU-Net's data
augmentation workers (paper preset) start processes that must not re-run the job.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cadsflow.logs import to_log_if


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    with to_log_if(args.log):
        if args.step == "train":
            _train(args)
        else:
            _run(args)
    return 0


def _train(args) -> None:
    import torch

    from cadsflow.final.config import FINAL_YAML, final_preset_for_group
    from cadsflow.final.train import final_training_env, train_final
    from cadsflow.specialists.nnunet import NnunetDirs

    torch.set_num_threads(max(1, args.threads))
    preset = final_preset_for_group(args.preset, args.group, args.config or FINAL_YAML)
    dirs = NnunetDirs(Path(args.nnunet_raw), Path(args.nnunet_preprocessed), Path(args.nnunet_results))
    # nnU-Net reads its folders, the Cads trainers their schedule and table, from the environment: this job's
    # process is the one place that sets them, before nnU-Net runs in it.
    os.environ.update(final_training_env(dirs, preset, args.table, base={}))
    train_final(args.group, args.planned, args.table, preset, dirs, args.marker, args.log)


def _run(args) -> None:
    from cadsflow.atomic import write_text
    from cadsflow.final.config import FINAL_YAML, head_subset_rules, oversampling_rule
    from cadsflow.final.counts import (
        label_count_table,
        label_count_table_from_provenance,
        read_count_table,
        read_volume_list,
        write_count_table,
    )
    from cadsflow.final.oversampling import oversampling_table, write_table
    from cadsflow.final.subsets import SubsetError, training_subset

    config = args.config or FINAL_YAML
    if args.step == "counts":
        if args.label_maps:
            counts = label_count_table(args.label_maps, args.group)
        else:
            if not args.volumes:
                raise SystemExit("counts --provenance needs --volumes (the volumes to count)")
            counts = label_count_table_from_provenance(args.provenance, args.group, read_volume_list(args.volumes))
        write_count_table(counts, args.out)
    elif args.step == "weights":
        counts = (label_count_table(args.label_maps, args.group) if args.label_maps
                  else read_count_table(args.counts, args.group))
        write_table(oversampling_table(args.group, counts, oversampling_rule(args.group, config)), args.out)
    else:
        rules = head_subset_rules(config)
        if args.group not in rules:
            raise SubsetError(f"group {args.group} has no head-subset rule in {config}: it trains on every "
                              "non-test volume")
        tables = {int(g): read_count_table(path, int(g)) for g, path in (_group_path(s) for s in args.counts)}
        volumes = training_subset(rules[args.group], tables)
        write_text(args.out, "".join(f"{v}\n" for v in volumes))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.final", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    counts = steps.add_parser("counts", help="label maps or provenance tables -> label-count table (TSV)")
    maps_or_provenance = counts.add_mutually_exclusive_group(required=True)
    maps_or_provenance.add_argument("--label-maps", nargs="+", help="<volume_id>.nii.gz label maps of the group")
    maps_or_provenance.add_argument("--provenance", nargs="+", help="the assembly's provenance tables (TSV)")
    counts.add_argument("--volumes", help="with --provenance: the volumes to count, one id per line")
    weights = steps.add_parser("weights", help="label maps or a count table -> oversampling table (TSV)")
    source = weights.add_mutually_exclusive_group(required=True)
    source.add_argument("--label-maps", nargs="+", help="the group's training volumes' <volume_id>.nii.gz maps")
    source.add_argument("--counts", help="the group's label-count table of its training volumes")
    subset = steps.add_parser("subset", help="count tables -> a head group's training volume ids")
    subset.add_argument("--counts", nargs="+", required=True, metavar="GROUP=TABLE",
                        help="label-count tables by group, e.g. 553=counts_553.tsv")
    train = steps.add_parser("train", help="train the final model on the planned dataset")
    train.add_argument("--planned", required=True, help="the marker the final_dataset job wrote after planning")
    train.add_argument("--table", required=True, help="the group's oversampling table (the trainer samples by it)")
    train.add_argument("--preset", required=True, help="preset name in config/final.yaml (smoke, paper)")
    train.add_argument("--nnunet-raw", required=True, help="nnUNet_raw folder of the final models")
    train.add_argument("--nnunet-preprocessed", required=True, help="nnUNet_preprocessed folder of the final models")
    train.add_argument("--nnunet-results", required=True, help="nnUNet_results folder (the final models)")
    train.add_argument("--marker", required=True, help="marker to write when training succeeded (JSON)")
    train.add_argument("--threads", type=int, default=1, help="CPU threads for torch (the rule's threads)")
    for step in (counts, weights, subset, train):
        step.add_argument("--group", type=int, required=True, help="group (551-559)")
        step.add_argument("--config", help="final-model config (default: config/final.yaml)")
        step.add_argument("--log", required=step is train, help="log file (train: nnU-Net's output goes there too)")
    for step in (counts, weights, subset):
        step.add_argument("--out", required=True, help="output file")
    return parser


def _group_path(spec: str) -> tuple[str, str]:
    group, sep, path = spec.partition("=")
    if not sep or not group.isdigit() or not path:
        raise SystemExit(f"--counts {spec!r}: expected GROUP=TABLE, e.g. 553=counts_553.tsv")
    return group, path


if __name__ == "__main__":
    sys.exit(main())
