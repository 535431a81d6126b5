"""python -m cadsflow.flavors plans|scale: the flavor plans of a planned dataset, or percentile-scaled images."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.flavors", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)
    plans = steps.add_parser("plans", help="write <preset plans>.json beside the planner's plans")
    plans.add_argument("--source", required=True, help="the planner's plans JSON (nnUNet_preprocessed/<dataset>/...)")
    scale = steps.add_parser("scale", help="write 5th-95th percentile scaled copies of images (export time)")
    scale.add_argument("--images", nargs="+", required=True, help="CT images (NIfTI or DICOM series folders)")
    scale.add_argument("--out", nargs="+", required=True, help="scaled NIfTI files, one per image")
    for step in (plans, scale):
        step.add_argument("--preset", required=True, help="flavor preset in the settings file (smoke, paper)")
        step.add_argument("--config", help="flavor settings YAML (default: config/flavors.yaml)")
        step.add_argument("--log", help="log file (default: stderr)")
    args = parser.parse_args(argv)
    if args.step == "scale" and len(args.images) != len(args.out):
        parser.error(f"--images ({len(args.images)}) and --out ({len(args.out)}) must pair up")

    from cadsflow.flavors.intensity import write_scaled_image
    from cadsflow.flavors.network import write_flavor_plans
    from cadsflow.flavors.settings import FLAVORS_YAML, load_flavor_preset
    from cadsflow.logs import to_log_if

    def run():
        preset = load_flavor_preset(args.preset, args.config or FLAVORS_YAML)
        if args.step == "plans":
            print(f"flavor plans -> {write_flavor_plans(args.source, preset)}")
            return
        for image, out in zip(args.images, args.out):
            write_scaled_image(image, out, preset.intensity_percentiles)
        print(f"scaled {len(args.images)} images ({preset.intensity_percentiles} percentiles -> [0, 1])")

    with to_log_if(args.log):
        run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
