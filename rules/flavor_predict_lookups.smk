# Lookups of the flavor_predict stage (rules/flavor_predict.smk includes this file at its top): the validation
# volumes, the parts (a few pseudo-label shards each), their volumes, reports and model arguments.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

from types import SimpleNamespace

from cadsflow.flavors.predict_plan import part_count, part_shards, part_volumes

# The flavor models are rules/flavors.smk's (fl_model_marker, FL_FLAVORS; included before this file).
FP = config["flavors"]
FP_CONFIG = project_path(FP["config"])
FP_FLAVORS = list(FL_FLAVORS)
FP_DIR = "results/flavors/predictions"  # {group}/{flavor}/{volume_id}.nii.gz, {group}/validation.tsv, part_{k}.tsv
# the validation volumes: predicted by every flavor in one job per group, scored by the ranking
FP_VALIDATION = sorted(volumes_in_split(FP["validation_split"]))
_FP_VALIDATION_SET = set(FP_VALIDATION)
# every other volume: by the selected flavors, in parts of shards_per_job pseudo-label shards (PL_SHARDS numbering)
FP_SHARDS_PER_JOB = FP["shards_per_job"]
_FP_PART_VOLUMES = {
    p: part_volumes(PL_SHARDS, p, FP_SHARDS_PER_JOB, _FP_VALIDATION_SET)
    for p in range(part_count(len(PL_SHARDS), FP_SHARDS_PER_JOB))
}
FP_PARTS = [
    p for p, members in _FP_PART_VOLUMES.items() if members
]  # a part of validation volumes only has no job
FP_DEVICE = PL_DEVICE


def fp_prediction_dir(group, flavor):
    """A flavor's label maps of one group (group label ids, standardized grid): <dir>/<volume_id>.nii.gz."""
    return f"{FP_DIR}/{group}/{flavor}"


def fp_validation_report(group):
    return f"{FP_DIR}/{group}/validation.tsv"


def fp_part_report(group, part):
    return f"{FP_DIR}/{group}/part_{part}.tsv"


def fp_part_of(volume_id):
    return PL_SHARDS.of(volume_id) // FP_SHARDS_PER_JOB


def fp_report_of(group, volume_id):
    """The report of the job that writes a volume's flavor predictions of a group (validation or part job)."""
    if volume_id in _FP_VALIDATION_SET:
        return fp_validation_report(group)
    return fp_part_report(group, fp_part_of(volume_id))


def fp_part_volumes(part):
    return _FP_PART_VOLUMES[int(part)]


def fp_models(wc):
    """Every flavor's training marker of the group (a part job picks the selected ones at run time)."""
    return [fl_model_marker(wc.group, f) for f in FP_FLAVORS]


def fp_model_args(wc):
    return " ".join(
        shlex.quote(f"{f}={fl_model_marker(wc.group, f)}") for f in FP_FLAVORS
    )


def fp_batches(volume_ids):
    """The standardize batches (directory outputs) that hold the volumes."""
    return sorted({f"results/standardized/{BATCH_OF[v]}" for v in volume_ids})


def fp_brain_reports(group, shards):
    """Head groups wait for group 553's (and 558 for group 552's) pseudo-label shards of the same volumes."""
    return sorted(
        {
            r
            for k in shards
            for r in pl_brain_shard(SimpleNamespace(group=group, shard=k))
        }
    )


def fp_validation_shards():
    return sorted({PL_SHARDS.of(v) for v in FP_VALIDATION})


def fp_job_runtime(n_volumes):
    """Minutes of a prediction job: every flavor predicts each volume (the preset's minutes per volume)."""
    return int(SP_PRESET.infer_runtime_min_per_volume * n_volumes * len(FP_FLAVORS)) + 5


FP_TARGETS = [fp_validation_report(g) for g in SP_GROUPS] + [
    fp_part_report(g, p) for g in SP_GROUPS for p in FP_PARTS
]
