"""cads-predict INPUT -o OUT_DIR: segment one CT (a NIfTI file or a DICOM series folder) with the factory's models.

Exit status: 0 done; 2 the input was refused (not a readable CT: one line on stderr says why) or the command line
is wrong; 3 a group's model is missing or unusable. Nothing is written to OUT_DIR in cases 2 and 3.
The steps and outputs are described in cadsflow.predict.pipeline; the time of each step is printed on stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

EXIT_OK, EXIT_REFUSED, EXIT_MODELS = 0, 2, 3
PROG = "cads-predict"


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from cadsflow.predict.models import DEFAULT_MODELS_DIR, ModelNotFoundError, parse_groups
    from cadsflow.predict.pipeline import InputRefused, ModelCache, PredictSettings, predict_volume

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"{PROG}: %(levelname)s %(name)s: %(message)s")
    try:
        groups = parse_groups(args.groups)
    except ValueError as exc:
        return _fail(EXIT_REFUSED, str(exc))
    settings = PredictSettings(groups=groups, device=args.device, fast=args.fast, dicom_seg=args.dicom_seg,
                               statistics=args.statistics, preview=args.preview)
    _threads(args.threads)
    _nnunet_trainers_visible()
    try:
        cache = ModelCache.from_dir(args.models or DEFAULT_MODELS_DIR, settings)
        result = predict_volume(args.input, args.out_dir, cache)
    except InputRefused as exc:
        return _fail(EXIT_REFUSED, f"refused {exc.path}: {exc.reason}")
    except ModelNotFoundError as exc:
        return _fail(EXIT_MODELS, str(exc))
    for note in result.notes:
        print(f"note: {note}")
    print(result.times.line(os.path.basename(os.path.normpath(args.input))))
    print(f"wrote {', '.join(result.outputs)} to {result.out_dir}")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    from cadsflow.predict.pipeline import FAST_INFERENCE

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="CT to segment: a NIfTI file (.nii, .nii.gz) or a folder of one DICOM series")
    parser.add_argument("-o", "--out-dir", required=True, help="folder for the outputs (created when needed)")
    parser.add_argument("--models", help="a factory run's results folder (final models, else the specialists), or "
                                         "a folder of <group>.done markers (default: the checkout's results/)")
    parser.add_argument("--groups", help="comma-separated groups to predict (default: all nine, 551-559); "
                                         "557/558 also run 553 (brain gate), 558 may run 552 (neck)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--dicom-seg", action="store_true",
                        help="also write segmentations.dcm (DICOM-SEG referencing the input; DICOM input only)")
    parser.add_argument("--statistics", action="store_true",
                        help="also write statistics.json (volume in ml, mean and median HU per structure)")
    parser.add_argument("--preview", action="store_true", help="also write preview.png (three views with labels)")
    parser.add_argument("--fast", action="store_true",
                        help=f"faster, coarser: tile step {FAST_INFERENCE.tile_step_size} (no overlap) and "
                             f"{FAST_INFERENCE.label_resampling}-neighbour label export at the model's spacing")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return parser


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)
    return code


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(max(1, threads))


def _nnunet_trainers_visible() -> None:
    """nnU-Net finds the project's trainer classes (named in the checkpoints) through nnUNet_extTrainer; this
    process is the job's own entry, the one place that sets it (cadsflow.specialists.nnunet)."""
    from cadsflow.specialists.nnunet import TRAINERS_DIR

    os.environ.setdefault("nnUNet_extTrainer", str(TRAINERS_DIR))


if __name__ == "__main__":
    sys.exit(main())
