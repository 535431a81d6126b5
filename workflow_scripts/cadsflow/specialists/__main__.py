"""python -m cadsflow.specialists: train one group's specialist with nnU-Net (a Snakemake shell rule)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cadsflow.logs import to_log


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.specialists", description=main.__doc__)
    parser.add_argument("--group", type=int, required=True, help="specialist group (551-559)")
    parser.add_argument("--dataset", required=True, help="the group's nnU-Net raw dataset folder (DatasetGGG_Name)")
    parser.add_argument("--preset", required=True, help="preset name in the presets file (smoke, paper)")
    parser.add_argument("--presets-file", help="presets YAML (default: config/presets.yaml)")
    parser.add_argument("--nnunet-raw", required=True, help="nnUNet_raw folder")
    parser.add_argument("--nnunet-preprocessed", required=True, help="nnUNet_preprocessed folder")
    parser.add_argument("--nnunet-results", required=True, help="nnUNet_results folder (the models)")
    parser.add_argument("--marker", required=True, help="marker to write when the model is trained (JSON)")
    parser.add_argument("--log", required=True, help="log file (nnU-Net's output goes there too)")
    args = parser.parse_args(argv)

    from cadsflow.specialists.nnunet import NnunetDirs
    from cadsflow.specialists.presets import PRESETS_YAML, load_preset
    from cadsflow.specialists.train import train_specialist

    with to_log(args.log):
        preset = load_preset(args.preset, args.presets_file or PRESETS_YAML)
        dirs = NnunetDirs(Path(args.nnunet_raw), Path(args.nnunet_preprocessed), Path(args.nnunet_results))
        train_specialist(args.group, args.dataset, preset, dirs, args.marker, args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
