# Lookups of the assembly stage (rules/assembly.smk includes this file at its top): the batch jobs' inputs and
# command-line words, the card's dataset.json files, and the stage's paths (contracts: as_provenance, as_map).
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans). The other stages' lookups
# (fp_dir_of, fl_dataset_json, FL_FLAVORS; fn_dataset_json, included after this file) are
# only called inside functions, at DAG time.

from cadsflow.assembly.card import CARD_FILES
from cadsflow.assembly.dag import (
    dataset_json_args,
    flavor_dir_args,
    prediction_dirs,
    training_datasets,
)

AS_DIR = "results/assembled"
AS_CONFIG = project_path(config["assembly"]["config"])
AS_CARD = {key: f"{AS_DIR}/dataset_card/{name}" for key, name in CARD_FILES.items()}
AS_PRIORITY = "results/ranking/priority.tsv"


def as_provenance(batch):
    """The provenance table of one standardize batch (all its volumes and groups): the batch job's output."""
    return f"{AS_DIR}/provenance/{batch}.tsv"


def as_batch_dir(group, batch):
    """The batch job's declared folder of one group: <volume_id>.nii.gz and <volume_id>.provenance.tsv."""
    return f"{AS_DIR}/{group}/{batch}"


def as_batch_dirs(batch):
    """The batch job's folders of every group (its declared directory outputs)."""
    return [as_batch_dir(g, batch) for g in SP_GROUPS]


def as_map(group, volume_id):
    """A volume's assembled label map of one group (written by its batch's job; none if quarantined)."""
    return f"{as_batch_dir(group, BATCH_OF[volume_id])}/{volume_id}.nii.gz"


def as_prediction_dirs(wc):
    """The folders of the flavor prediction jobs (validation, parts) that hold the batch's volumes, every group."""
    return prediction_dirs(BATCHES[wc.batch], SP_GROUPS, fp_dir_of)


def as_gt_input(wc):
    """The batch's ground-truth folder, when the gt stage makes one for it."""
    return [f"results/gt/{wc.batch}"] if gt_needs_batch(wc.batch) else []


def as_gt_args(wc):
    return (
        f"--gt-batch {shlex.quote(f'results/gt/{wc.batch}')}"
        if gt_needs_batch(wc.batch)
        else ""
    )


def as_flavor_args(wc):
    return " ".join(
        shlex.quote(w)
        for w in flavor_dir_args(BATCHES[wc.batch], SP_GROUPS, FL_FLAVORS, fp_dir_of)
    )


def as_training_datasets():
    """(stage, group, dataset.json) of the specialists, each flavor and the final model, every group."""
    return training_datasets(
        SP_GROUPS,
        FL_FLAVORS,
        lambda g: f"{GT_NNUNET_RAW}/{GROUP_TRAINING[g].dataset_name}/dataset.json",
        fl_dataset_json,
        fn_dataset_json,  # rules/final_lookups.smk (included after this file; called at DAG time)
    )


def as_card_datasets(wc):
    return [path for _, _, path in as_training_datasets()]


def as_card_args(wc):
    return " ".join(shlex.quote(w) for w in dataset_json_args(as_training_datasets()))


AS_TARGETS = [as_provenance(b) for b in BATCHES] + list(AS_CARD.values())
