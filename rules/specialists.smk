# Stage: specialists (Online Methods 2.1, 6.1). One nnU-Net v2 3d_fullres model per group, mirroring off.
# The preset (config/presets.yaml, chosen by config["preset"]) sets trainer, plans, schedule, device and resources;
# the DAG is the same for every preset. nnU-Net's folders come from config["specialists"], per job.

from cadsflow.labels import GROUP_IDS
from cadsflow.specialists.presets import load_preset

SP_PRESET = load_preset(config["preset"], config["specialists"]["presets"])
SP_MODELS = config["specialists"]["models"]  # nnUNet_results


def sp_model_marker(group):
    """The marker a trained specialist leaves: JSON naming its model folder and fold."""
    return f"{SP_MODELS}/{group}.done"


def sp_raw_dataset(group):
    """The group's nnU-Net raw dataset folder, as the gt stage names and exports it (GROUP_TRAINING, rules/gt.smk)."""
    return f"{config['specialists']['nnunet_raw']}/{GROUP_TRAINING[int(group)].dataset_name}"


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


rule train_specialist:
    """Plan, preprocess and train the group's nnU-Net specialist from its GT dataset; mark the model done."""
    input:
        dataset_json=lambda wc: f"{sp_raw_dataset(wc.group)}/dataset.json",
    output:
        marker=f"{SP_MODELS}/{{group}}.done",
    log:
        "logs/specialists/train_{group}.log",
    benchmark:
        "benchmarks/specialists/train_{group}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
    conda:
        "../envs/cads.yaml"
    threads: SP_PRESET.threads
    resources:
        **sp_job_resources(SP_PRESET.train_runtime_min),
    params:
        dataset=lambda wc: sp_raw_dataset(wc.group),
        preset=SP_PRESET.name,
        presets=config["specialists"]["presets"],
        settings=repr(SP_PRESET),  # a changed preset retrains (Snakemake's params rerun trigger)
        raw=config["specialists"]["nnunet_raw"],
        preprocessed=config["specialists"]["nnunet_preprocessed"],
        results=SP_MODELS,
    shell:
        "python -m cadsflow.specialists --group {wildcards.group} --dataset {params.dataset:q}"
        " --preset {params.preset:q} --presets-file {params.presets:q}"
        " --nnunet-raw {params.raw:q} --nnunet-preprocessed {params.preprocessed:q} --nnunet-results {params.results:q}"
        " --marker {output.marker:q} --log {log:q} 2>> {log:q}"
