# Lookups of the final stage (rules/final.smk includes this file at its top): the final preset, nnU-Net's folders of
# the final models, training candidates, markers, test predictions and job resources.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

from cadsflow.final.config import load_final_preset
from cadsflow.layout import job_folder

FN_CONFIG = project_path(config["final"]["config"])
FN_PRESET = load_final_preset(config["preset"], FN_CONFIG)
FN_ROOT = "results/final"
FN_RAW = f"{FN_ROOT}/nnUNet_raw"
FN_PREPROCESSED = f"{FN_ROOT}/nnUNet_preprocessed"
FN_MODELS = f"{FN_ROOT}/models"  # nnUNet_results
FN_SAMPLING = f"{FN_ROOT}/sampling"
# {group}.tsv: final_predict's report; beside it its declared folder {group}/ holding only {volume_id}.nii.gz
FN_PREDICTIONS = f"{FN_ROOT}/predictions"
FN_GROUPS = SP_GROUPS  # the assembly labels the groups whose specialists exist
FN_ARGS = " ".join(  # the preset and nnU-Net's folders, as the train step's command line names them
    f"--{name} {shlex.quote(str(value))}"
    for name, value in [
        ("preset", FN_PRESET.name),
        ("config", FN_CONFIG),
        ("nnunet-raw", FN_RAW),
        ("nnunet-preprocessed", FN_PREPROCESSED),
        ("nnunet-results", FN_MODELS),
    ]
)
# Online Methods 4.1: the final model trains on every volume that is not in the test split
FN_TRAINING_VOLUMES = sorted(v for v, vol in VOLUMES.items() if vol.split != "test")
FN_TRAINING_BATCHES = sorted({BATCH_OF[v] for v in FN_TRAINING_VOLUMES})
FN_TEST_VOLUMES = sorted(volumes_in_split("test"))


def fn_dataset_name(group):
    """Dataset<G>_<Name>: the group's nnU-Net dataset, named as the specialist's (GROUP_TRAINING)."""
    return GROUP_TRAINING[int(group)].dataset_name


def fn_dataset_json(group):
    """The final model's raw dataset.json (numTraining: its training volumes)."""
    return f"{FN_RAW}/{fn_dataset_name(group)}/dataset.json"


def fn_planned(group):
    return f"{FN_PREPROCESSED}/{fn_dataset_name(group)}.planned"


def fn_sampling_table(group):
    """The group's oversampling table (structure weights, image probabilities) that the trainer samples by."""
    return f"{FN_SAMPLING}/{fn_dataset_name(group)}.tsv"


def fn_model_marker(group):
    """The marker a trained final model leaves: JSON naming its model folder and fold (the specialists' format)."""
    return f"{FN_MODELS}/{group}.done"


def fn_test_report(group):
    """The report of the group's test-split predictions (volume_id, status, reason), beside its folder of maps."""
    return f"{FN_PREDICTIONS}/{group}.tsv"


def fn_prediction_dir(group):
    """final_predict's declared folder: the group's {volume_id}.nii.gz of the test split, nothing else (so the
    evaluation's default prediction path results/final/predictions/{group}/{volume_id}.nii.gz is flat).
    """
    return str(job_folder(fn_test_report(group)))


def fn_check_dataset(wildcards):
    """The final_dataset job's group and name must be a pair of GROUP_TRAINING (Dataset<G>_<Name>)."""
    expected = fn_dataset_name(wildcards.group)
    if expected != f"Dataset{wildcards.group}_{wildcards.name}":
        raise ValueError(
            f"{expected} is group {wildcards.group}'s dataset, not Dataset{wildcards.group}_{wildcards.name}"
        )
    return expected


def fn_training_candidates(wildcards):
    """Every non-test volume: its standardized image and its assembled map of the group (the job keeps those that
    exist and, for the head groups, pass the subset rule)."""
    fn_check_dataset(wildcards)
    return [
        dict(
            volume_id=v,
            source=VOLUMES[v].source,
            image=f"{standardized(v)}/image.nii.gz",
            label=as_map(wildcards.group, v),
        )
        for v in FN_TRAINING_VOLUMES
    ]


def fn_brain_dirs(wildcards):
    """Head groups read the final model's own group 553 predictions of the test volumes (and 558 group 552's: its
    neck fallback): their final_predict folders, the DAG edge 553 -> 557/558."""
    group = int(wildcards.group)
    dirs = (
        {"--brain-dir": fn_prediction_dir(BRAIN_GROUP)} if is_head_group(group) else {}
    )
    if group == NECK_FALLBACK_GROUP and NECK_VERTEBRAE_GROUP in FN_GROUPS:
        dirs["--vertebrae-dir"] = fn_prediction_dir(NECK_VERTEBRAE_GROUP)
    return dirs


def fn_brain_inputs(wildcards):
    return list(fn_brain_dirs(wildcards).values())


def fn_brain_args(wildcards):
    return " ".join(
        f"{option} {shlex.quote(folder)}"
        for option, folder in fn_brain_dirs(wildcards).items()
    )


def fn_assembled_dirs(wildcards):
    """The assembly's folders of the group that hold the training candidates' maps (one per training batch)."""
    return [as_batch_dir(wildcards.group, b) for b in FN_TRAINING_BATCHES]


def fn_job_resources(runtime_min):
    """Scheduler resources of a final-preset job, as sp_job_resources: grow with each retry; GPU keys only when the
    final preset asks for a GPU."""
    resources = {
        "mem_mb": lambda wc, attempt: FN_PRESET.mem_mb * attempt,
        "runtime": lambda wc, attempt: runtime_min * attempt,
    }
    if FN_PRESET.gpus:
        resources["gpu"] = FN_PRESET.gpus
        if FN_PRESET.gpu_model:
            resources["gpu_model"] = FN_PRESET.gpu_model
    return resources


# the 9 models and, when the sheet has a test split, their predictions of it
FN_TARGETS = [fn_model_marker(g) for g in FN_GROUPS] + [
    fn_test_report(g) for g in FN_GROUPS if FN_TEST_VOLUMES
]
