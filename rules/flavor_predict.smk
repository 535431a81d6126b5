# Stage: flavor_predict (Online Methods 2.3, 2.4). Each group's three flavor models predict, in one job per group,
# the validation volumes (config flavors.validation_split), which the ranking scores; then the flavors the priority
# table ranks first for some structure of the group predict every other volume, in parts of a few pseudo-label
# shards (config flavors.shards_per_job). A job loads each of its flavor models once. Each job declares its folder
# of label maps beside its report (cadsflow.layout.job_folder): results/flavors/predictions/{group}/validation/ and
# .../{group}/part_{part}/, holding {flavor}/{volume_id}.nii.gz (group label ids, standardized grid, the
# pseudo-labels' post-processing; head groups gated and cropped by group 553's pseudo-labels). Snakemake deletes a
# job's folder before it runs it, so a rerun of one killed part redoes that part only.


include: "flavor_predict_lookups.smk"


rule flavor_validate:
    """Predict the group's validation volumes with every flavor model (one load each); report each volume."""
    input:
        models=fp_models,
        batches=fp_batches(FP_VALIDATION),
        brain=lambda wc: fp_brain_inputs(wc.group, fp_validation_shards()),
        postprocessing=project_path(config["pseudolabel"]["postprocessing"]),
    output:
        report=fp_validation_report("{group}"),
        maps=directory(fp_validation_dir("{group}")),
    log:
        "logs/flavor_predict/{group}/validation.log",
    benchmark:
        "benchmarks/flavor_predict/{group}/validation.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
    conda:
        "../envs/nnunet.yaml"
    threads: SP_PRESET.threads
    resources:
        **sp_job_resources(fp_job_runtime(len(FP_VALIDATION))),
    params:
        models=fp_model_args,
        volumes=[standardized(v) for v in FP_VALIDATION],
        brain=lambda wc: fp_brain_args(wc.group, fp_validation_shards()),
        trainers=str(TRAINERS_DIR),
        flavors_config=str(FP_CONFIG),
        preset=config["preset"],
        device=FP_DEVICE,
        tile_step=SP_PRESET.tile_step_size,
        label_resampling=SP_PRESET.label_resampling,
    shell:
        "nnUNet_extTrainer={params.trainers:q} python -m cadsflow.flavors.predict --group {wildcards.group}"
        " --model {params.models} --volumes {params.volumes:q} --out-root {output.maps:q}"
        " --report {output.report:q} {params.brain} --postprocessing {input.postprocessing:q}"
        " --flavors-config {params.flavors_config:q} --flavor-preset {params.preset}"
        " --device {params.device} --tile-step-size {params.tile_step}"
        " --label-resampling {params.label_resampling} --threads {threads} --log {log:q} 2>> {log:q}"


rule flavor_predict:
    """Predict a part's volumes with the flavors the priority table ranks first for some structure of the group."""
    input:
        priority=lambda wc: RK_PRIORITY,
        models=fp_models,
        batches=lambda wc: fp_batches(fp_part_volumes(wc.part)),
        brain=lambda wc: fp_brain_inputs(wc.group, fp_part_shards(wc.part)),
        postprocessing=project_path(config["pseudolabel"]["postprocessing"]),
    output:
        report=fp_part_report("{group}", "{part}"),
        maps=directory(fp_part_dir("{group}", "{part}")),
    log:
        "logs/flavor_predict/{group}/part_{part}.log",
    benchmark:
        "benchmarks/flavor_predict/{group}/part_{part}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
        part=r"\d+",
    conda:
        "../envs/nnunet.yaml"
    threads: SP_PRESET.threads
    resources:
        **sp_job_resources(fp_job_runtime(PL_SHARDS.size * FP_SHARDS_PER_JOB)),
    params:
        models=fp_model_args,
        volumes=lambda wc: [standardized(v) for v in fp_part_volumes(wc.part)],
        brain=lambda wc: fp_brain_args(wc.group, fp_part_shards(wc.part)),
        trainers=str(TRAINERS_DIR),
        flavors_config=str(FP_CONFIG),
        preset=config["preset"],
        device=FP_DEVICE,
        tile_step=SP_PRESET.tile_step_size,
        label_resampling=SP_PRESET.label_resampling,
    shell:
        "nnUNet_extTrainer={params.trainers:q} python -m cadsflow.flavors.predict --group {wildcards.group}"
        " --model {params.models} --priority {input.priority:q} --volumes {params.volumes:q}"
        " --out-root {output.maps:q} --report {output.report:q} {params.brain}"
        " --postprocessing {input.postprocessing:q} --flavors-config {params.flavors_config:q}"
        " --flavor-preset {params.preset} --device {params.device} --tile-step-size {params.tile_step}"
        " --label-resampling {params.label_resampling} --threads {threads} --log {log:q} 2>> {log:q}"
