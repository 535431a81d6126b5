# Lookups of the specialists stage (rules/specialists.smk includes this file at its top): the preset, nnU-Net's folders, model markers and job resources.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

from cadsflow.specialists.presets import load_preset

SP_PRESET = load_preset(
    config["preset"], project_path(config["specialists"]["presets"])
)
SP_RAW = config["specialists"]["nnunet_raw"]
SP_PREPROCESSED = config["specialists"]["nnunet_preprocessed"]
SP_MODELS = config["specialists"]["models"]  # nnUNet_results
SP_ARGS = " ".join(  # the preset and nnU-Net's folders, as every step's command line names them
    f"--{name} {shlex.quote(str(value))}"
    for name, value in [
        ("preset", SP_PRESET.name),
        ("presets-file", project_path(config["specialists"]["presets"])),
        ("nnunet-raw", SP_RAW),
        ("nnunet-preprocessed", SP_PREPROCESSED),
        ("nnunet-results", SP_MODELS),
    ]
)


def sp_model_marker(group):
    """The marker a trained specialist leaves: JSON naming its model folder and fold."""
    return f"{SP_MODELS}/{group}.done"


def sp_protected(path):
    """A trained model's marker, write-protected when the config asks for it (Snakemake's protected())."""
    return protected(path) if config["specialists"]["protect_models"] else path


def sp_raw_dataset(group):
    """The group's nnU-Net raw dataset folder, as the gt stage names and exports it (GROUP_TRAINING, rules/gt.smk)."""
    return f"{SP_RAW}/{GROUP_TRAINING[int(group)].dataset_name}"


def sp_job_resources(runtime_min):
    """Scheduler resources of a preset's job (grow with each retry); GPU keys only when the preset asks for a GPU.

    CPUs come from the rule's threads. A site that must name the GPU model sets gpu_model in the preset or with
    the profile's set-resources.
    """
    resources = {
        "mem_mb": lambda wc, attempt: SP_PRESET.mem_mb * attempt,
        "runtime": lambda wc, attempt: runtime_min * attempt,
    }
    if SP_PRESET.gpus:
        resources["gpu"] = SP_PRESET.gpus
        if SP_PRESET.gpu_model:
            resources["gpu_model"] = SP_PRESET.gpu_model
    return resources
