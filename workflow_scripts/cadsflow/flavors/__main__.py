"""python -m cadsflow.flavors images|dataset|train|plans|scale: one step of the model flavors (Snakemake shell rules).

images   a standardize batch -> its percentile-scaled images and index (rule flavor_images)
dataset  one group's flavor training set -> nnU-Net raw dataset, then plan and preprocess it (rule flavor_dataset)
train    train the flavor model on the planned dataset; write the model marker (rule flavor_train)
plans, scale  the flavor plans of a planned dataset, or scaled copies of images (by hand)

A module under a __main__ guard, not a Snakemake `script:`: nnU-Net's pooled steps (paper preset) spawn workers
that re-import the main module. One Python process per job: nnU-Net runs in it (cadsflow.specialists.planning).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.flavors", description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    images = steps.add_parser("images", help="scale a standardize batch's ok volumes; write their index")
    images.add_argument("--standardized", required=True, help="the standardize batch folder (results/standardized/B)")
    images.add_argument("--out", required=True, help="the batch's scaled-image folder (results/flavors/images/B)")
    dataset = steps.add_parser("dataset", help="export one group's flavor dataset, plan and preprocess it")
    dataset.add_argument("--flavor", required=True, help="flavor name (config/flavors.yaml flavors: GT, Pseudo, Shape)")
    dataset.add_argument("--dataset", required=True, help="the raw dataset folder to write (Dataset<G>_<Name>)")
    dataset.add_argument("--images", nargs="+", required=True, help="scaled-image batch folders (with index.tsv)")
    dataset.add_argument("--specialist-dataset", help="GT: the specialist's raw dataset folder")
    dataset.add_argument("--pseudo-reports", nargs="*", default=[], help="Pseudo, Shape: the group's shard reports")
    dataset.add_argument("--pseudo-dir", help="Pseudo, Shape: a folder of pseudo-label maps to read instead of the "
                         "folder beside each shard report")
    dataset.add_argument("--gt-root", help="Pseudo, Shape: results/gt; given, ground truth overrides pseudo-labels")
    dataset.add_argument("--excluded", help="Shape: shape QC's excluded.tsv of the group")
    dataset.add_argument("--held-out-split", default="test", help="split never trained on (validation volumes)")
    dataset.add_argument("--empty-fallback-dataset",
                         help="Pseudo, Shape: when no volume is left, train on this specialist dataset's ground truth "
                              "instead of failing (config flavors.empty_training_set: ground_truth)")
    train = steps.add_parser("train", help="train the flavor trainer on the planned dataset")
    train.add_argument("--planned", required=True, help="the marker the dataset step wrote")
    for step in (dataset, train):
        step.add_argument("--group", type=int, required=True, help="group (551-559)")
        step.add_argument("--presets-file", help="specialists' presets YAML (default: config/presets.yaml)")
        step.add_argument("--nnunet-raw", required=True, help="the flavor's nnUNet_raw folder")
        step.add_argument("--nnunet-preprocessed", required=True, help="the flavor's nnUNet_preprocessed folder")
        step.add_argument("--nnunet-results", required=True, help="the flavor's nnUNet_results folder (the models)")
        step.add_argument("--marker", required=True, help="marker to write when the step succeeded (JSON)")
        step.add_argument("--threads", type=int, default=1, help="CPU threads for torch (the rule's threads)")
    plans = steps.add_parser("plans", help="write <preset plans>.json beside the planner's plans")
    plans.add_argument("--source", required=True, help="the planner's plans JSON (nnUNet_preprocessed/<dataset>/...)")
    scale = steps.add_parser("scale", help="write 5th-95th percentile scaled copies of images (export time)")
    scale.add_argument("--images", nargs="+", required=True, help="CT images (NIfTI or DICOM series folders)")
    scale.add_argument("--out", nargs="+", required=True, help="scaled NIfTI files, one per image")
    for step in (images, dataset, train, plans, scale):
        step.add_argument("--preset", required=True, help="preset name: the flavor preset and, for dataset and "
                                                          "train, the specialists' preset of that name (smoke, paper)")
        step.add_argument("--config", help="flavor settings YAML (default: config/flavors.yaml)")
        step.add_argument("--log", help="log file (default: stderr)")
    args = parser.parse_args(argv)
    if args.step == "scale" and len(args.images) != len(args.out):
        parser.error(f"--images ({len(args.images)}) and --out ({len(args.out)}) must pair up")

    from cadsflow.flavors.settings import FLAVORS_YAML, load_flavor_preset
    from cadsflow.logs import to_log_if

    with to_log_if(args.log):
        preset = load_flavor_preset(args.preset, args.config or FLAVORS_YAML)
        {"images": _images, "dataset": _dataset, "train": _train, "plans": _plans, "scale": _scale}[args.step](
            args, preset)
    return 0


def _images(args, preset) -> None:
    from cadsflow.flavors.datasets import write_flavor_images

    rows = write_flavor_images(args.standardized, args.out, preset.intensity_percentiles)
    print(f"{args.out}: {sum(r.image is not None for r in rows)} of {len(rows)} volumes scaled "
          f"({preset.intensity_percentiles} percentiles -> [0, 1])")


def _dataset(args, preset) -> None:
    from cadsflow.flavors.datasets import TRAINING_SETS, DatasetError, read_image_index, select_cases
    from cadsflow.flavors.datasets import write_flavor_dataset
    from cadsflow.flavors.training import flavor_training_preset, plan_flavor
    from cadsflow.specialists.nnunet import nnunet_env
    from cadsflow.specialists.train import plan_specialist

    if args.flavor not in TRAINING_SETS:
        raise DatasetError(f"flavor {args.flavor!r}: no training set for it; known: {sorted(TRAINING_SETS)}")
    specialists = _specialists_preset(args)
    selection = select_cases(TRAINING_SETS[args.flavor], args.group, read_image_index(args.images),
                             specialist_dataset=args.specialist_dataset, reports=args.pseudo_reports,
                             pseudo_dir=args.pseudo_dir, held_out_split=args.held_out_split, gt_root=args.gt_root,
                             excluded=args.excluded)
    specialist_json = Path(args.specialist_dataset) / "dataset.json" if args.specialist_dataset else None
    if not selection.cases and args.empty_fallback_dataset:
        # e.g. every head volume gated out because group 553 found no brain: the flavor still exists (the ranking
        # compares it), trained on the group's ground truth; the log and cads_cases.tsv say so
        logging.getLogger(__name__).warning(
            "group %s, flavor %s: no training volume left (%s); training on the ground truth of %s instead",
            args.group, args.flavor, selection.why_empty(), args.empty_fallback_dataset)
        selection = select_cases(TRAINING_SETS["GT"], args.group, read_image_index(args.images),
                                 specialist_dataset=args.empty_fallback_dataset)
        specialist_json = Path(args.empty_fallback_dataset) / "dataset.json"
    write_flavor_dataset(args.group, args.flavor, selection, args.dataset, specialist_json)
    dirs = _dirs(args)
    # nnU-Net reads its folders from the environment: this job's process is the one place that sets them
    os.environ.update(nnunet_env(dirs, base={}))
    plan_specialist(args.group, args.dataset, flavor_training_preset(specialists, preset), dirs, args.marker,
                    args.log or os.devnull, steps=lambda group, name: plan_flavor(group, name, specialists, preset))


def _train(args, preset) -> None:
    from cadsflow.flavors.training import flavor_training_preset
    from cadsflow.specialists.nnunet import training_env
    from cadsflow.specialists.train import train_specialist

    training = flavor_training_preset(_specialists_preset(args), preset)
    dirs = _dirs(args)
    os.environ.update(training_env(dirs, training, base={}))  # nnU-Net's folders and the flavor's schedule
    train_specialist(args.group, args.planned, training, dirs, args.marker, args.log or os.devnull)


def _plans(args, preset) -> None:
    from cadsflow.flavors.network import write_flavor_plans

    print(f"flavor plans -> {write_flavor_plans(args.source, preset)}")


def _scale(args, preset) -> None:
    from cadsflow.flavors.intensity import write_scaled_image

    for image, out in zip(args.images, args.out):
        write_scaled_image(image, out, preset.intensity_percentiles)
    print(f"scaled {len(args.images)} images ({preset.intensity_percentiles} percentiles -> [0, 1])")


def _specialists_preset(args):
    """The specialists' preset of the same name; also sets torch's threads to the job's (both nnU-Net steps)."""
    import torch

    from cadsflow.specialists.presets import PRESETS_YAML, load_preset

    torch.set_num_threads(max(1, args.threads))
    return load_preset(args.preset, args.presets_file or PRESETS_YAML)


def _dirs(args):
    from cadsflow.specialists.nnunet import NnunetDirs

    return NnunetDirs(Path(args.nnunet_raw), Path(args.nnunet_preprocessed), Path(args.nnunet_results))


if __name__ == "__main__":
    sys.exit(main())
