# Stage: specialists (Online Methods 2.1, 6.1). One nnU-Net v2 3d_fullres model per group, mirroring off.
# The preset (config/presets.yaml, chosen by config["preset"]) sets trainer, plans, schedule, device and resources;
# the DAG is the same for every preset. nnU-Net's folders come from config["specialists"], per job.


include: "specialists_lookups.smk"


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
        "../envs/nnunet.yaml"
    threads: SP_PRESET.num_processes
    resources:
        mem_mb=lambda wc, attempt: SP_PRESET.mem_mb * attempt,
        runtime=lambda wc, attempt: SP_PRESET.plan_runtime_min * attempt,
    params:
        dataset=lambda wc: sp_raw_dataset(wc.group),
        args=SP_ARGS,
        settings=SP_PRESET.model_settings,  # a changed model setting replans (Snakemake's params rerun trigger)
    shell:
        "python -m cadsflow.specialists plan --group {wildcards.group} --dataset {params.dataset:q} {params.args}"
        " --marker {output.planned:q} --threads {threads} --log {log:q} 2>> {log:q}"


rule train_specialist:
    """Train the group's nnU-Net specialist (3d_fullres, mirroring off) on its preprocessed dataset."""
    input:
        planned=f"{SP_PREPROCESSED}/{{group}}.planned",
    output:
        # a paper model costs 80-160 GPU hours: write-protected, so no rerun replaces it by accident
        # (specialists.protect_models: false for throw-away runs)
        marker=sp_protected(f"{SP_MODELS}/{{group}}.done"),
    log:
        "logs/specialists/train_{group}.log",
    benchmark:
        "benchmarks/specialists/train_{group}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
    conda:
        "../envs/nnunet.yaml"
    threads: SP_PRESET.threads
    resources:
        **sp_job_resources(SP_PRESET.train_runtime_min),
    params:
        args=SP_ARGS,
        settings=SP_PRESET.model_settings,  # a changed model setting retrains
    shell:
        "python -m cadsflow.specialists train --group {wildcards.group} --planned {input.planned:q} {params.args}"
        " --marker {output.marker:q} --threads {threads} --log {log:q} 2>> {log:q}"
