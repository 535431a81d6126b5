"""python -m cadsflow.specialists plan|train: one step of a group's specialist (Snakemake shell rules)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cadsflow.logs import to_log


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.specialists", description=main.__doc__)
    steps = parser.add_subparsers(dest="step", required=True)
    plan = steps.add_parser("plan", help="fingerprint, plan and preprocess the group's raw dataset")
    plan.add_argument("--dataset", required=True, help="the group's nnU-Net raw dataset folder (Dataset<G>_<Name>)")
    train = steps.add_parser("train", help="train the preset's trainer on the planned dataset")
    train.add_argument("--planned", required=True, help="the marker the plan step wrote")
    for step in (plan, train):
        step.add_argument("--group", type=int, required=True, help="specialist group (551-559)")
        step.add_argument("--preset", required=True, help="preset name in the presets file (smoke, paper)")
        step.add_argument("--presets-file", help="presets YAML (default: config/presets.yaml)")
        step.add_argument("--nnunet-raw", required=True, help="nnUNet_raw folder")
        step.add_argument("--nnunet-preprocessed", required=True, help="nnUNet_preprocessed folder")
        step.add_argument("--nnunet-results", required=True, help="nnUNet_results folder (the models)")
        step.add_argument("--marker", required=True, help="marker to write when the step succeeded (JSON)")
        step.add_argument("--log", required=True, help="log file (nnU-Net's output goes there too)")
    args = parser.parse_args(argv)

    from cadsflow.specialists.nnunet import NnunetDirs
    from cadsflow.specialists.presets import PRESETS_YAML, load_preset
    from cadsflow.specialists.train import plan_specialist, train_specialist

    with to_log(args.log):
        preset = load_preset(args.preset, args.presets_file or PRESETS_YAML)
        dirs = NnunetDirs(Path(args.nnunet_raw), Path(args.nnunet_preprocessed), Path(args.nnunet_results))
        if args.step == "plan":
            plan_specialist(args.group, args.dataset, preset, dirs, args.marker, args.log)
        else:
            train_specialist(args.group, args.planned, preset, dirs, args.marker, args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
