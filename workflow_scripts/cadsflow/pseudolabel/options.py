"""Command-line options every prediction job shares (python -m cadsflow.pseudolabel, python -m
cadsflow.flavors.predict), and the run around them: logging, option checks, torch's threads."""

from __future__ import annotations

import argparse
import logging

from cadsflow.logs import to_log_if


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """The options every prediction job shares (pseudo-label shards, flavor parts): head gating folders, clean-up,
    device and threads, the preset's tiling and label export, failure policy, log."""
    parser.add_argument("--brain-dir", nargs="+", help="folder(s) of group 553's label maps of the volumes, e.g. its "
                                                       "pseudo-label shards' (required for the head groups 557, 558)")
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
                        help="exit 1 when a volume failed (after predicting the others)")
    parser.add_argument("--log", help="append logging to this file")


def run_logged(args, run) -> int:
    """run(args) with logging to --log (else to stderr), after checking the shared options and setting torch's
    threads."""
    with to_log_if(args.log):
        if not args.log:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not 0 < args.tile_step_size <= 1:
            raise SystemExit(f"--tile-step-size must be in (0, 1], got {args.tile_step_size}")
        import torch

        torch.set_num_threads(max(1, args.threads))
        return run(args)
