"""python -m cadsflow.pseudolabel: predict one shard of volumes with one group's specialist (a Snakemake shell rule).

nnU-Net's predictor starts worker processes, so this runs as a module under a __main__ guard, not as a
Snakemake `script:`. nnU-Net finds the project's trainers through nnUNet_extTrainer, which the rule sets.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cadsflow.logs import to_log_if


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.pseudolabel", description=main.__doc__)
    parser.add_argument("--group", type=int, required=True, help="specialist group (551-559)")
    parser.add_argument("--model", required=True, help="the group's training marker (results/specialists/models/G.done)")
    parser.add_argument("--volumes", nargs="+", required=True, help="standardized volume folders of the shard")
    parser.add_argument("--out-dir", required=True,
                        help="the shard's folder of label maps (<volume_id>.nii.gz; the rule's declared directory)")
    parser.add_argument("--report", required=True, help="shard report to write (TSV: volume_id, status, reason)")
    parser.add_argument("--brain-dir", nargs="+",
                        help="folder(s) of group 553's label maps of the shard (required for the head groups 557, 558)")
    parser.add_argument("--vertebrae-dir", nargs="+",
                        help="folder(s) of group 552's label maps (group 558: the neck when no brain is found)")
    parser.add_argument("--postprocessing", help="connected-component table (default: config/postprocessing.yaml)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--tile-step-size", type=float, default=0.5,
                        help="sliding-window step as a fraction of the patch (the preset's tile_step_size)")
    parser.add_argument("--label-resampling", choices=("probabilities", "nearest"), default="probabilities",
                        help="how labels reach the image grid (the preset's label_resampling)")
    parser.add_argument("--fail-on-volume-error", action="store_true",
                        help="exit 1 when a volume failed (after predicting its shard-mates)")
    parser.add_argument("--log", help="append logging to this file")
    args = parser.parse_args(argv)
    with to_log_if(args.log):
        if not args.log:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return _run(args)


def _run(args) -> int:
    import torch

    from cadsflow.pseudolabel.infer import predict_shard
    from cadsflow.pseudolabel.postprocess import POSTPROCESSING_YAML, load_cleanup_rules
    from cadsflow.specialists.train import read_marker

    if not 0 < args.tile_step_size <= 1:
        raise SystemExit(f"--tile-step-size must be in (0, 1], got {args.tile_step_size}")
    torch.set_num_threads(max(1, args.threads))
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
