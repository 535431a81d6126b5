# Lookups of the flavor_predict stage (rules/flavor_predict.smk includes this file at its top): the validation
# volumes, the parts (a few pseudo-label shards each), their volumes, reports and model arguments.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

from cadsflow.flavors.predict_plan import part_count, part_shards, part_volumes
from cadsflow.layout import job_folder

# The flavor models are rules/flavors.smk's (fl_model_marker, FL_FLAVORS; included before this file).
FP = config["flavors"]
FP_CONFIG = project_path(FP["config"])
FP_FLAVORS = list(FL_FLAVORS)
# {group}/validation.tsv and {group}/part_{p}.tsv reports; beside each, its job's declared folder of maps
# {group}/validation/{flavor}/{volume_id}.nii.gz, {group}/part_{p}/{flavor}/{volume_id}.nii.gz (cadsflow.layout)
FP_DIR = "results/flavors/predictions"
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


def fp_validation_report(group):
    return f"{FP_DIR}/{group}/validation.tsv"


def fp_part_report(group, part):
    return f"{FP_DIR}/{group}/part_{part}.tsv"


def fp_validation_dir(group):
    """flavor_validate's declared folder: <dir>/<flavor>/<volume_id>.nii.gz of every flavor (beside its report)."""
    return str(job_folder(fp_validation_report(group)))


def fp_part_dir(group, part):
    """flavor_predict's declared folder: <dir>/<flavor>/<volume_id>.nii.gz of the selected flavors."""
    return str(job_folder(fp_part_report(group, part)))


def fp_part_of(volume_id):
    return PL_SHARDS.of(volume_id) // FP_SHARDS_PER_JOB


def fp_dir_of(group, volume_id):
    """The folder of the job that writes a volume's flavor predictions of a group (validation or part job)."""
    if volume_id in _FP_VALIDATION_SET:
        return fp_validation_dir(group)
    return fp_part_dir(group, fp_part_of(volume_id))


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


def fp_brain_dirs(group, shards):
    """Head groups read group 553's (and 558 group 552's) pseudo-label maps of the same volumes: the folders of
    those shards (declared outputs of the pseudolabel stage), the DAG edge 553 -> 557/558.
    """
    group = int(group)
    groups = [BRAIN_GROUP] if is_head_group(group) else []
    if group == NECK_FALLBACK_GROUP and NECK_VERTEBRAE_GROUP in SP_GROUPS:
        groups.append(NECK_VERTEBRAE_GROUP)
    return {g: [pl_shard_dir(g, k) for k in sorted(set(shards))] for g in groups}


def fp_brain_inputs(group, shards):
    return sorted(d for dirs in fp_brain_dirs(group, shards).values() for d in dirs)


def fp_brain_args(group, shards):
    """--brain-dir <553 shard folders> (and --vertebrae-dir <552 shard folders> for group 558)."""
    options = {BRAIN_GROUP: "--brain-dir", NECK_VERTEBRAE_GROUP: "--vertebrae-dir"}
    return " ".join(
        f"{options[g]} " + " ".join(shlex.quote(d) for d in dirs)
        for g, dirs in fp_brain_dirs(group, shards).items()
    )


def fp_part_shards(part):
    return part_shards(int(part), len(PL_SHARDS), FP_SHARDS_PER_JOB)


def fp_validation_shards():
    return sorted({PL_SHARDS.of(v) for v in FP_VALIDATION})


def fp_job_runtime(n_volumes):
    """Minutes of a prediction job: every flavor predicts each volume (the preset's minutes per volume)."""
    return int(SP_PRESET.infer_runtime_min_per_volume * n_volumes * len(FP_FLAVORS)) + 5


FP_TARGETS = [fp_validation_report(g) for g in SP_GROUPS] + [
    fp_part_report(g, p) for g in SP_GROUPS for p in FP_PARTS
]
