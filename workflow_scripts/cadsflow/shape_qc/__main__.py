"""python -m cadsflow.shape_qc {train,score,exclude,gallery}: thin command lines over the library (Snakemake rules).

    train    a group's prior from its ground-truth label maps          -> prior .pt
    score    pseudo-labels of one shard against the prior             -> scores TSV (SCORE_COLUMNS)
    exclude  a group's score tables -> the worst fraction of images   -> excluded TSV (+ optional image table)
    gallery  the worst volumes' slices with pseudo-label and reconstruction outlines -> PNG

Volume ids come from the label maps' file names (<volume_id>.nii.gz, the pseudo-label layout) unless
--volume-ids gives them. Every command takes --preset (config/shape_qc.yaml), and the torch ones --seed,
--threads and --device.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cadsflow.logs import to_log_if


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.shape_qc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a group's shape prior on ground-truth label maps")
    _common(train, torch_options=True)
    train.add_argument("--group", type=int, required=True, help="the group (551-559) whose label ids the maps hold")
    train.add_argument("--labels", nargs="+", required=True, help="fully annotated ground-truth group label maps")
    train.add_argument("--volume-ids", nargs="+", help="ids of --labels (default: from the file names)")
    train.add_argument("--out", required=True, help="the prior file to write (.pt)")
    train.add_argument("--skip-missing", action="store_true",
                       help="leave out maps that do not exist (a quarantined training volume has none), logged")

    score = sub.add_parser("score", help="score pseudo-labels (one row per volume and structure)")
    _common(score, torch_options=True)
    score.add_argument("--prior", required=True)
    which = score.add_mutually_exclusive_group(required=True)
    which.add_argument("--labels", nargs="+", help="pseudo-label maps <volume_id>.nii.gz")
    which.add_argument("--shard-report", nargs="+", help="pseudo-label shard reports: score their volumes whose "
                       "status is ok (their maps in the shard's folder beside the report, shard_k.tsv -> shard_k/); "
                       "the others are not pseudo-labelled")
    score.add_argument("--volume-ids", nargs="+", help="ids of --labels (default: from the file names)")
    score.add_argument("--out", required=True, help="score table to write (TSV)")

    exclude = sub.add_parser("exclude", help="per-image scores and the worst fraction of a group's images")
    _common(exclude, torch_options=False)
    exclude.add_argument("--scores", nargs="+", required=True, help="the group's score tables (all shards)")
    exclude.add_argument("--fraction", type=float, help="share of images to exclude (default: the preset's)")
    exclude.add_argument("--out", required=True, help="exclusion table to write (TSV)")
    exclude.add_argument("--images-out", help="also write every image's score, rank and state (TSV)")
    exclude.add_argument("--merged-out", help="also write the shards' score tables as one (TSV)")

    gallery = sub.add_parser("gallery", help="PNG of the worst-scored volumes")
    _common(gallery, torch_options=True)
    gallery.add_argument("--prior", required=True)
    gallery.add_argument("--scores", nargs="+", required=True, help="the group's score tables (all shards)")
    where = gallery.add_mutually_exclusive_group(required=True)
    where.add_argument("--labels", nargs="+", help="pseudo-label maps <volume_id>.nii.gz")
    where.add_argument("--label-dir", nargs="+", help="the group's folders of pseudo-labels <volume_id>.nii.gz (its "
                       "shard folders; listed once each, only the shown volumes are read)")
    images = gallery.add_mutually_exclusive_group()
    images.add_argument("--images", nargs="+", help="CT images, in the order of --labels")
    images.add_argument("--image-glob", help="pattern of a volume's CT with {volume_id}, e.g. "
                                             "'results/standardized/*/{volume_id}/image.nii.gz'")
    gallery.add_argument("--volume-ids", nargs="+", help="ids of --labels (default: from the file names)")
    gallery.add_argument("--n", type=int, help="how many volumes (default: the preset's gallery_volumes)")
    gallery.add_argument("--out", required=True, help="the PNG to write")

    args = parser.parse_args(argv)
    with to_log_if(args.log):
        if not args.log:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return COMMANDS[args.command](args)


def _common(parser, torch_options: bool) -> None:
    parser.add_argument("--preset", default="demo", help="preset of config/shape_qc.yaml (default: demo)")
    parser.add_argument("--config", help="shape-QC YAML (default: config/shape_qc.yaml)")
    parser.add_argument("--log", help="append logging to this file")
    if torch_options:
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--threads", type=int, help="torch CPU threads (default: the preset's)")
        parser.add_argument("--device", help="torch device (default: the preset's)")


def _preset(args):
    from cadsflow.shape_qc.presets import SHAPE_QC_YAML, load_preset

    return load_preset(args.preset, args.config or SHAPE_QC_YAML)


def _torch_setup(args, preset) -> str:
    import torch

    torch.set_num_threads(max(1, args.threads or preset.threads))
    return args.device or preset.device


def _ids(args) -> list[str] | None:
    if args.volume_ids is not None and args.labels is not None and len(args.volume_ids) != len(args.labels):
        raise SystemExit(f"--volume-ids names {len(args.volume_ids)} volumes, --labels {len(args.labels)}")
    return args.volume_ids


def _train(args) -> int:
    from cadsflow.shape_qc.model import save_prior
    from cadsflow.shape_qc.train import train_prior_from_files, volume_id_of

    preset = _preset(args)
    ids = _ids(args)
    labels = list(args.labels)
    if args.skip_missing:
        ids = ids or [volume_id_of(p) for p in labels]
        present = [(v, p) for v, p in zip(ids, labels) if Path(p).is_file()]
        for v, p in zip(ids, labels):
            if not Path(p).is_file():
                logging.getLogger("cadsflow.shape_qc").info("%s: no ground-truth map %s (quarantined?); left out", v, p)
        if not present:
            raise SystemExit(f"group {args.group}: none of the {len(labels)} ground-truth maps exists")
        ids, labels = [v for v, _ in present], [p for _, p in present]
    device = _torch_setup(args, preset)
    prior, stats = train_prior_from_files(labels, args.group, preset, seed=args.seed, device=device,
                                          volume_ids=ids, preset_name=args.preset)
    save_prior(prior, args.out)
    logging.getLogger("cadsflow.shape_qc").info(
        "prior of group %d: %d maps (%d empty skipped), %d steps in %.1f s, final loss %.4f", args.group,
        len(prior.meta.training_volumes), len(stats.skipped), stats.steps, stats.seconds, stats.losses[-1])
    return 0


def _score(args) -> int:
    from cadsflow.shape_qc.model import load_prior
    from cadsflow.shape_qc.score import score_files

    preset = _preset(args)
    if args.shard_report:
        from cadsflow.layout import job_folder, map_path
        from cadsflow.pseudolabel.shards import ok_volumes

        pairs = [(v, map_path(job_folder(report), v)) for report in args.shard_report for v in ok_volumes(report)]
        ids, labels = [v for v, _ in pairs], [str(path) for _, path in pairs]
    else:
        ids, labels = _ids(args), args.labels
    device = _torch_setup(args, preset)
    prior = load_prior(args.prior, device)
    score_files(prior, labels, preset, seed=args.seed, out=args.out, volume_ids=ids)
    return 0


def _exclude(args) -> int:
    from cadsflow.shape_qc.exclude import write_exclusions

    preset = _preset(args)
    fraction = preset.exclude_fraction if args.fraction is None else args.fraction
    write_exclusions(args.scores, args.out, fraction, preset.combine, preset.robust_z_floor_mm, args.images_out,
                     args.merged_out)
    return 0


def _gallery(args) -> int:
    from cadsflow.shape_qc.exclude import SCORED, image_scores
    from cadsflow.shape_qc.gallery import GalleryVolume, write_gallery
    from cadsflow.shape_qc.model import load_prior
    from cadsflow.shape_qc.score_table import read_scores
    from cadsflow.shape_qc.train import volume_id_of

    preset = _preset(args)
    device = _torch_setup(args, preset)
    table = image_scores(read_scores(args.scores), preset.combine, preset.robust_z_floor_mm, preset.exclude_fraction)
    if args.labels is not None:
        if args.images is not None and len(args.images) != len(args.labels):
            raise SystemExit(f"--images names {len(args.images)} files, --labels {len(args.labels)}")
        ids = _ids(args) or [volume_id_of(p) for p in args.labels]
        labels = dict(zip(ids, map(Path, args.labels)))
        images = dict(zip(ids, map(Path, args.images))) if args.images else {}
    else:
        from cadsflow.layout import MapIndex

        maps = MapIndex(args.label_dir)
        labels = {v: maps.path(v) for v in table["volume_id"] if v in maps}
        images = {}
    n = preset.gallery_volumes if args.n is None else args.n
    ranked = table[(table["state"] == SCORED) & table["volume_id"].isin(labels)].sort_values("rank")
    shown = list(ranked["volume_id"].head(n))  # only these volumes' files are looked up and read
    volumes = [GalleryVolume(v, labels[v], images.get(v) or _globbed_image(args.image_glob, v)) for v in shown]
    write_gallery(load_prior(args.prior, device), table, volumes, args.out, preset, seed=args.seed, n=n)
    return 0


def _globbed_image(pattern: str | None, volume_id: str):
    """The one file matching the pattern for this volume, or None (the gallery then draws outlines on black)."""
    import glob
    from pathlib import Path

    if not pattern:
        return None
    matches = sorted(glob.glob(pattern.replace("{volume_id}", glob.escape(volume_id))))
    return Path(matches[0]) if len(matches) == 1 else None


COMMANDS = {"train": _train, "score": _score, "exclude": _exclude, "gallery": _gallery}


if __name__ == "__main__":
    sys.exit(main())
