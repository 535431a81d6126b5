# Lookups of the gt stage (rules/gt.smk includes this file at its top): training sources per group, atlas batches, GT folders and targets.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

from cadsflow.gt.nnunet_dataset import CandidateVolume
from cadsflow.gt.training import (
    TrainingConfigError,
    atlas_sources,
    check_known_sources,
    load_group_training,
    training_volume_ids,
)

GT = config["gt"]
GROUP_TRAINING = load_group_training(
    project_path(GT["group_training"]), GT["training_preset"] or config["preset"]
)
GT_ATLAS_SOURCES = atlas_sources(GROUP_TRAINING)
try:
    check_known_sources(
        GROUP_TRAINING,
        set(SOURCES) | {v.source for v in VOLUMES.values()},
        f"group training preset {GT['training_preset'] or config['preset']!r}: ",
    )
except TrainingConfigError as exc:
    # A sheet without a group's training sources (a user's own cohort, a subset) still standardizes, prepares GT
    # and evaluates; that group just gets no dataset, model or pseudo-labels. Say so loudly, do not stop.
    logger.warning(f"{exc}; groups without training volumes get no specialist")
GT_NNUNET_RAW = config["specialists"]["nnunet_raw"]
GT_ATLAS_IMAGE = GT["atlas"]["image"] or "results/atlas/phantom_image.nii.gz"
GT_ATLAS_LABELS = GT["atlas"]["labels"] or "results/atlas/phantom_labels.nii.gz"
GT_REGISTRATION = GT["registration"]
# what cadsflow.gt.atlas.RegistrationSettings takes; `threads` goes to the rule (ITK reads it at process start)
GT_REGISTRATION_SETTINGS = {k: v for k, v in GT_REGISTRATION.items() if k != "threads"}


def gt_folder(volume_id):
    """A volume's ground-truth folder (inside its batch's directory output)."""
    return f"results/gt/{BATCH_OF[volume_id]}/{volume_id}"


def gt_batch_source(batch):
    return VOLUMES[BATCHES[batch][0]].source  # batches hold one source each


def gt_is_atlas_batch(batch):
    return gt_batch_source(batch) in GT_ATLAS_SOURCES


def gt_needs_batch(batch):
    """Batches with something to do: a labelled volume, or a source whose CTs get atlas labels."""
    return gt_is_atlas_batch(batch) or any(VOLUMES[v].has_label for v in BATCHES[batch])


def gt_atlas_input(wildcards):
    if gt_is_atlas_batch(wildcards.batch):
        return {"atlas_image": GT_ATLAS_IMAGE, "atlas_labels": GT_ATLAS_LABELS}
    return {}


def gt_training_ids(wildcards):
    training = GROUP_TRAINING[int(wildcards.group)]
    if training.name != wildcards.name:
        asked = f"Dataset{wildcards.group}_{wildcards.name}"
        raise ValueError(
            f"{training.dataset_name} is group {wildcards.group}'s dataset, not {asked}"
        )
    return training_volume_ids(training, VOLUMES)


GT_TARGETS = expand(
    "results/gt/{batch}", batch=[b for b in BATCHES if gt_needs_batch(b)]
)
GT_DATASET_TARGETS = [
    f"{GT_NNUNET_RAW}/{t.dataset_name}/dataset.json"
    for t in GROUP_TRAINING.values()
    if training_volume_ids(t, VOLUMES)
]
# Groups whose specialist has training data: only they get a model and pseudo-labels
SP_GROUPS = [
    g for g, t in sorted(GROUP_TRAINING.items()) if training_volume_ids(t, VOLUMES)
]
