# Stage: specialists (Online Methods 2.1, 6.1). One nnU-Net v2 3d_fullres model per group, mirroring off.
# The preset (config/presets.yaml, chosen by config["preset"]) sets trainer, plans, schedule, device and resources;
# the DAG is the same for every preset. nnU-Net's folders come from config["specialists"], per job.

import shlex

from cadsflow.specialists.presets import load_preset

SP_PRESET = load_preset(config["preset"], config["specialists"]["presets"])
SP_RAW = config["specialists"]["nnunet_raw"]
SP_PREPROCESSED = config["specialists"]["nnunet_preprocessed"]
SP_MODELS = config["specialists"]["models"]  # nnUNet_results
SP_ARGS = " ".join(  # the preset and nnU-Net's folders, as every step's command line names them
    f"--{name} {shlex.quote(str(value))}"
    for name, value in [
        ("preset", SP_PRESET.name),
        ("presets-file", config["specialists"]["presets"]),
        ("nnunet-raw", SP_RAW),
        ("nnunet-preprocessed", SP_PREPROCESSED),
        ("nnunet-results", SP_MODELS),
    ]
)


def sp_model_marker(group):
    """The marker a trained specialist leaves: JSON naming its model folder and fold."""
    return f"{SP_MODELS}/{group}.done"


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


rule plan_specialist:
    """Fingerprint, plan and preprocess the group's GT dataset with the preset's plans (a CPU job)."""
    input:
        dataset_json=lambda wc: f"{sp_raw_dataset(wc.group)}/dataset.json",
    output:
        planned=f"{SP_PREPROCESSED}/{{group}}.planned",
    log:
        "logs/specialists/plan_{group}.log",
    benchmark:
        "benchmarks/specialists/plan_{group}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
    conda:
        "../envs/cads.yaml"
    threads: SP_PRESET.num_processes
    resources:
        mem_mb=lambda wc, attempt: SP_PRESET.mem_mb * attempt,
        runtime=lambda wc, attempt: SP_PRESET.plan_runtime_min * attempt,
    params:
        dataset=lambda wc: sp_raw_dataset(wc.group),
        args=SP_ARGS,
        settings=repr(SP_PRESET),  # a changed preset replans (Snakemake's params rerun trigger)
    shell:
        "python -m cadsflow.specialists plan --group {wildcards.group} --dataset {params.dataset:q} {params.args}"
        " --marker {output.planned:q} --log {log:q} 2>> {log:q}"


rule train_specialist:
    """Train the group's nnU-Net specialist (3d_fullres, mirroring off) on its preprocessed dataset."""
    input:
        planned=f"{SP_PREPROCESSED}/{{group}}.planned",
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
        args=SP_ARGS,
        settings=repr(SP_PRESET),  # a changed preset retrains
    shell:
        "python -m cadsflow.specialists train --group {wildcards.group} --planned {input.planned:q} {params.args}"
        " --marker {output.marker:q} --log {log:q} 2>> {log:q}"
