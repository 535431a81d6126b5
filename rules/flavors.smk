# Stage: flavors (Online Methods 2.3, 6.1). Three models per group, trained on different training sets: GT (the
# specialist's ground truth), Pseudo (every non-held-out volume's ok pseudo-label, ground truth overriding the
# structures it annotates when flavors.pseudo_gt_override) and Shape (Pseudo minus shape QC's exclusions). The
# network is the paper's residual U-Net inside nnU-Net (config/flavors.yaml presets); images are scaled from their
# 5th to 95th percentile to [0, 1] once per standardize batch and shared by every flavor dataset.
# nnU-Net roots per flavor: results/flavors/{flavor}/nnUNet_raw, nnUNet_preprocessed, models.


include: "flavors_lookups.smk"


rule flavor_images:
    """Scale every ok volume of a standardize batch from its 5th-95th percentile to [0, 1] (the flavors' input)."""
    input:
        standardized="results/standardized/{batch}",
    output:
        images=directory(f"{FL_IMAGES}/{{batch}}"),
    log:
        "logs/flavors/images/{batch}.log",
    benchmark:
        "benchmarks/flavors/images/{batch}.tsv"
    conda:
        "../envs/nnunet.yaml"
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: (5 + len(BATCHES[wc.batch]) // 10) * attempt,
    params:
        args=FL_IMAGE_ARGS,
        percentiles=FL_PRESET.intensity_percentiles,  # changed percentiles rescale (params trigger)
    shell:
        "python -m cadsflow.flavors images --standardized {input.standardized:q} --out {output.images:q}"
        " {params.args} --log {log:q} 2>> {log:q}"


rule flavor_dataset:
    """Export one group's flavor training set as an nnU-Net raw dataset, then plan and preprocess it (one job)."""
    input:
        unpack(fl_dataset_input),
    output:
        dataset_json=f"{FL_DIR}/{{flavor}}/nnUNet_raw/Dataset{{group}}_{{name}}/dataset.json",
        cases=f"{FL_DIR}/{{flavor}}/nnUNet_raw/Dataset{{group}}_{{name}}/cads_cases.tsv",
        gt_share=f"{FL_DIR}/{{flavor}}/nnUNet_raw/Dataset{{group}}_{{name}}/cads_gt_share.tsv",
        planned=f"{FL_DIR}/{{flavor}}/nnUNet_preprocessed/Dataset{{group}}_{{name}}.planned",
    log:
        "logs/flavors/{flavor}/dataset_{group}_{name}.log",
    benchmark:
        "benchmarks/flavors/{flavor}/dataset_{group}_{name}.tsv"
    wildcard_constraints:
        flavor=FL_FLAVOR_PATTERN,
        group=r"55[1-9]",
        name=r"[A-Za-z0-9]+",
    conda:
        "../envs/nnunet.yaml"
    threads: SP_PRESET.num_processes
    resources:
        mem_mb=lambda wc, attempt: SP_PRESET.mem_mb * attempt,
        runtime=lambda wc, attempt: FL_PRESET.dataset_runtime_min * attempt,
    params:
        dataset=lambda wc: fl_dataset_dir(wc.group, wc.flavor),
        training_set=fl_dataset_args,
        nnunet=fl_nnunet_args,
        args=FL_ARGS,
        settings=FL_SETTINGS,
    shell:
        "python -m cadsflow.flavors dataset --group {wildcards.group} --flavor {wildcards.flavor}"
        " --dataset {params.dataset:q} --images {input.images:q} {params.training_set} {params.nnunet}"
        " {params.args} --marker {output.planned:q} --threads {threads} --log {log:q} 2>> {log:q}"


rule flavor_train:
    """Train the group's flavor model (the paper's residual U-Net, nnU-Net's flavor trainer) on its dataset."""
    input:
        planned=lambda wc: fl_planned(wc.group, wc.flavor),
    output:
        # a paper flavor model costs a day of GPU time: write-protected like the specialists' (protect_models)
        marker=sp_protected(f"{FL_DIR}/{{flavor}}/models/{{group}}.done"),
    log:
        "logs/flavors/{flavor}/train_{group}.log",
    benchmark:
        "benchmarks/flavors/{flavor}/train_{group}.tsv"
    wildcard_constraints:
        flavor=FL_FLAVOR_PATTERN,
        group=r"55[1-9]",
    conda:
        "../envs/nnunet.yaml"
    threads: SP_PRESET.threads
    resources:
        **sp_job_resources(FL_PRESET.train_runtime_min),
    params:
        nnunet=fl_nnunet_args,
        args=FL_ARGS,
        settings=FL_SETTINGS,
    shell:
        "python -m cadsflow.flavors train --group {wildcards.group} --planned {input.planned:q} {params.nnunet}"
        " {params.args} --marker {output.marker:q} --threads {threads} --log {log:q} 2>> {log:q}"
