"""python -m cadsflow.pseudolabel: predict one shard of volumes with one group's specialist (a Snakemake shell rule).

nnU-Net's predictor starts worker processes, so this runs as a module under a __main__ guard, not as a
Snakemake `script:`. nnU-Net finds the project's trainers through nnUNet_extTrainer, which the rule sets.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cadsflow.pseudolabel.options import add_prediction_options, run_logged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.pseudolabel", description=main.__doc__)
    parser.add_argument("--group", type=int, required=True, help="specialist group (551-559)")
    parser.add_argument("--model", required=True, help="the group's training marker (results/specialists/models/G.done)")
    parser.add_argument("--volumes", nargs="+", required=True, help="standardized volume folders of the shard")
    parser.add_argument("--out-dir", required=True,
                        help="the shard's folder of label maps (<volume_id>.nii.gz; the rule's declared directory)")
    parser.add_argument("--report", required=True, help="shard report to write (TSV: volume_id, status, reason)")
    add_prediction_options(parser)
    args = parser.parse_args(argv)
    return run_logged(args, _run)


def _run(args) -> int:
    from cadsflow.pseudolabel.infer import predict_shard
    from cadsflow.pseudolabel.postprocess import POSTPROCESSING_YAML, load_cleanup_rules
    from cadsflow.specialists.train import read_marker

    model = read_marker(args.model)
    cleanup = load_cleanup_rules(args.group, args.postprocessing or POSTPROCESSING_YAML)
    report = predict_shard(model["model_dir"], model["fold"], args.volumes, args.out_dir, args.group,
                           device=args.device, cleanup=cleanup, brain_dir=args.brain_dir, report_path=args.report,
                           tile_step_size=args.tile_step_size, label_resampling=args.label_resampling,
                           vertebrae_dir=args.vertebrae_dir)
    for outcome in report.failed:
        logging.getLogger("cadsflow.pseudolabel").error("volume %s failed: %s", outcome.volume_id, outcome.reason)
    return 1 if report.failed and args.fail_on_volume_error else 0


if __name__ == "__main__":
    sys.exit(main())
