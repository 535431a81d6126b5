"""python -m cadsflow.ranking: rank the flavors of every structure (Algorithm 1) and draw the selection chart."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadsflow.ranking", description=__doc__)
    parser.add_argument("--scores", nargs="+", required=True,
                        help="long score table(s): structure, group, flavor, volume_id, split_kind, dice, hd95")
    parser.add_argument("--out", required=True, help="priority table to write (results/ranking/priority.tsv)")
    parser.add_argument("--figure", help="PNG of the selection chart (structures x flavors, chosen marked)")
    parser.add_argument("--config", help="flavor settings YAML (default: config/flavors.yaml)")
    parser.add_argument("--groups", nargs="*", type=int, default=[],
                        help="rank every structure of these groups, scored or not (default: the scored ones)")
    parser.add_argument("--label-space", help="structure table naming the groups' structures (default: config's)")
    parser.add_argument("--gt-share", nargs=3, action="append", default=[], metavar=("FLAVOR", "GROUP", "TSV"),
                        help="a flavor dataset's cads_gt_share.tsv (structure, gt_share); repeat per flavor and group")
    parser.add_argument("--log", help="log file (default: stderr)")
    args = parser.parse_args(argv)

    from cadsflow.logs import to_log_if
    from cadsflow.ranking.figure import plot_priority
    from cadsflow.ranking.tables import FLAVORS_YAML, load_ranking_settings, rank_scores, read_gt_shares, read_priority

    def run():
        settings = load_ranking_settings(args.config or FLAVORS_YAML)
        structures = None
        if args.groups:
            from cadsflow.labels import load_label_space

            space = load_label_space(args.label_space) if args.label_space else load_label_space()
            structures = {str(g): [s.name for s in space.group(g)] for g in args.groups}
        decisions = rank_scores(args.scores, args.out, settings, structures, read_gt_shares(args.gt_share))
        unscored = sum(1 for d in decisions if d.split_kind == "")
        if unscored:
            print(f"{unscored} structures without validation scores: configured flavor order")
        print(f"ranked {len(decisions)} structures -> {args.out}")
        if args.figure:
            plot_priority(read_priority(args.out), args.figure, settings)
            print(f"selection chart -> {args.figure}")

    with to_log_if(args.log):
        run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
