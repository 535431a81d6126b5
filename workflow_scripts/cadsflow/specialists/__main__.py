"""python -m cadsflow.specialists plan|train: one step of a group's specialist (Snakemake shell rules).

A module under a __main__ guard, not a Snakemake `script:`: nnU-Net's pooled steps (paper preset) spawn workers
that re-import the main module.
"""

from __future__ import annotations

import argparse
import os
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
        step.add_argument("--threads", type=int, default=1, help="CPU threads for torch (the rule's threads)")
    args = parser.parse_args(argv)

    from cadsflow.specialists.nnunet import NnunetDirs, nnunet_env, training_env
    from cadsflow.specialists.presets import PRESETS_YAML, load_preset
    from cadsflow.specialists.train import plan_specialist, train_specialist

    import torch

    torch.set_num_threads(max(1, args.threads))
    with to_log(args.log):
        preset = load_preset(args.preset, args.presets_file or PRESETS_YAML)
        dirs = NnunetDirs(Path(args.nnunet_raw), Path(args.nnunet_preprocessed), Path(args.nnunet_results))
        # nnU-Net reads its folders (and the Cads trainers their schedule) from the environment: this job's process
        # is the one place that sets them, before nnU-Net runs in it.
        os.environ.update(nnunet_env(dirs, base={}) if args.step == "plan" else training_env(dirs, preset, base={}))
        if args.step == "plan":
            plan_specialist(args.group, args.dataset, preset, dirs, args.marker, args.log)
        else:
            train_specialist(args.group, args.planned, preset, dirs, args.marker, args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
