# Lookups of the pseudolabel stage (rules/pseudolabel.smk includes this file at its top): shards, their members and reports, the head groups' brain (and neck) inputs.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

from cadsflow.pseudolabel.postprocess import BRAIN_GROUP, is_head_group

NECK_FALLBACK_GROUP, NECK_VERTEBRAE_GROUP = (
    558,
    552,
)  # 558 without brain: the neck above 552's upper vertebrae
from cadsflow.pseudolabel.shards import Shards
from cadsflow.specialists.nnunet import TRAINERS_DIR

PL_DIR = "results/pseudolabels"  # {group}/shard_{k}.tsv reports, {group}/shard_{k}/{volume_id}.nii.gz label maps
PL_SHARDS = Shards(VOLUMES, config["pseudolabel"]["shard_size"] or SP_PRESET.shard_size)
PL_DEVICE = config["pseudolabel"]["device"] or SP_PRESET.device


def pl_shards():
    """Shard indices of the sheet: shard k holds the k-th chunk of the sorted volume ids."""
    return PL_SHARDS.indices()


def pl_shard_members(k):
    return PL_SHARDS.members(int(k))


def pl_shard_batches(wc):
    """The standardize batches (directory outputs) that hold the shard's volumes."""
    return sorted(
        {f"results/standardized/{BATCH_OF[v]}" for v in pl_shard_members(wc.shard)}
    )


def pl_shard_report(group, k):
    return f"{PL_DIR}/{group}/shard_{k}.tsv"


def pl_shard_dir(group, k):
    """The shard job's declared folder of label maps, beside its report (cadsflow.layout.job_folder)."""
    return f"{PL_DIR}/{group}/shard_{k}"


def pl_shard_report_of(group, volume_id):
    """The report of the job that pseudo-labels the volume for the group."""
    return pl_shard_report(group, PL_SHARDS.of(volume_id))


def pl_shard_dir_of(group, volume_id):
    """The declared folder that holds the volume's label map for the group: what a per-volume reader waits for."""
    return pl_shard_dir(group, PL_SHARDS.of(volume_id))


def pl_shard_dirs(group, shards=None):
    """The declared label-map folders of a group's shards (all shards by default): a reader of many maps gets these
    as inputs and finds the maps with cadsflow.layout.MapIndex (one listing per folder).
    """
    return [pl_shard_dir(group, k) for k in (pl_shards() if shards is None else shards)]


def pl_label_map(group, volume_id):
    """A volume's label map for one group (exists unless its shard report says quarantined or failed)."""
    return f"{pl_shard_dir_of(group, volume_id)}/{volume_id}.nii.gz"


# A system's prediction path in config (evaluation.comparisons) that names the specialists' pseudo-labels: the
# volume's map is in its shard's folder, which the path does not name (pl_prediction_path fills it in)
PL_MAP_PATTERN = f"{PL_DIR}/{{group}}/{{volume_id}}.nii.gz"


def pl_prediction_path(path, volume_id):
    """PL_MAP_PATTERN of one volume: results/pseudolabels/{group}/shard_{k}/<volume_id>.nii.gz ({group} left in)."""
    if path != PL_MAP_PATTERN:
        raise WorkflowError(
            f"prediction path {path!r}: pseudo-labels are named {PL_MAP_PATTERN!r} (each map lies in its shard's folder)"
        )
    return f"{PL_DIR}/{{group}}/shard_{PL_SHARDS.of(volume_id)}/{volume_id}.nii.gz"


def pl_brain_shard(wc):
    """Head groups read group 553's folder of the same shard: the DAG edge 553 -> 557/558; group 558 also group
    552's (its neck fallback when no brain is found)."""
    group = int(wc.group)
    folders = [pl_shard_dir(BRAIN_GROUP, wc.shard)] if is_head_group(group) else []
    if group == NECK_FALLBACK_GROUP and NECK_VERTEBRAE_GROUP in SP_GROUPS:
        folders.append(pl_shard_dir(NECK_VERTEBRAE_GROUP, wc.shard))
    return folders


def pl_brain_args(wc):
    group = int(wc.group)
    brain = pl_shard_dir(BRAIN_GROUP, wc.shard)
    args = f"--brain-dir {brain}" if is_head_group(group) else ""
    if group == NECK_FALLBACK_GROUP and NECK_VERTEBRAE_GROUP in SP_GROUPS:
        args += f" --vertebrae-dir {pl_shard_dir(NECK_VERTEBRAE_GROUP, wc.shard)}"
    return args
