# Lookups of the ranking stage (rules/ranking.smk includes this file at its top): the validation volumes scored per
# group, the score tables, the flavor datasets' ground-truth shares and the priority table.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

RK_DIR = "results/ranking"
RK_PRIORITY = f"{RK_DIR}/priority.tsv"  # read by flavor_predict and the assembly
RK_FIGURE = f"{RK_DIR}/priority.png"
# the labelled validation volumes: what the flavors are scored on
RK_SCORED = [v for v in FP_VALIDATION if VOLUMES[v].has_label]


def rk_scores(group):
    return f"{RK_DIR}/scores/{group}.tsv"


def rk_volume_args(wc):
    """--volume <id> <source> <standardized folder> for every labelled validation volume."""
    return " ".join(
        f"--volume {shlex.quote(v)} {shlex.quote(VOLUMES[v].source)} {shlex.quote(standardized(v))}"
        for v in RK_SCORED
    )


def rk_training_sources(wc):
    """The group's training sources: their validation volumes are ID, all others OOD (Online Methods 2.4)."""
    return list(GROUP_TRAINING[int(wc.group)].sources)


def rk_gt_share_tables():
    """Every flavor dataset's ground-truth share table (structure, n_volumes_with_structure, n_from_gt, gt_share)."""
    return [fl_gt_share(g, f) for g in SP_GROUPS for f in FP_FLAVORS]


def rk_gt_share_args():
    """--gt-share <flavor> <group> <table> for every flavor dataset."""
    return " ".join(
        f"--gt-share {f} {g} {shlex.quote(fl_gt_share(g, f))}"
        for g in SP_GROUPS
        for f in FP_FLAVORS
    )


RK_TARGETS = [RK_PRIORITY, RK_FIGURE]
