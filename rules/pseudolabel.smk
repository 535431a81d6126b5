# Stage: pseudolabel (Online Methods 2.1, 3.1). Every volume through every specialist, in shards of volumes:
# a job loads its group's model once and predicts its shard. Head groups (557, 558) wait for group 553's
# shard (its brain gates and centres them). Each shard job declares its folder of label maps
# results/pseudolabels/{group}/shard_{k}/{volume_id}.nii.gz (one per volume that is not quarantined) beside its
# report shard_{k}.tsv (volume_id, status, reason), so Snakemake's clean-up and change detection see every map;
# readers take the folders as inputs and find maps with cadsflow.layout.MapIndex.


include: "pseudolabel_lookups.smk"


rule pseudolabel_shard:
    """Pseudo-label one shard of volumes with the group's specialist (one model load); report each volume."""
    input:
        model=lambda wc: sp_model_marker(wc.group),
        batches=pl_shard_batches,
        brain=pl_brain_shard,
        # its content shapes the label maps: a changed rule reruns the shards (Snakemake's input trigger)
        postprocessing=project_path(config["pseudolabel"]["postprocessing"]),
    output:
        report="results/pseudolabels/{group}/shard_{shard}.tsv",
        maps=directory("results/pseudolabels/{group}/shard_{shard}"),
    log:
        "logs/pseudolabel/{group}/shard_{shard}.log",
    benchmark:
        "benchmarks/pseudolabel/{group}/shard_{shard}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
        shard=r"\d+",
    conda:
        "../envs/nnunet.yaml"
    threads: SP_PRESET.threads
    resources:
        **sp_job_resources(
            int(SP_PRESET.infer_runtime_min_per_volume * PL_SHARDS.size) + 5
        ),
    params:
        volumes=lambda wc: [standardized(v) for v in pl_shard_members(wc.shard)],
        brain=pl_brain_args,
        trainers=str(TRAINERS_DIR),
        device=PL_DEVICE,
        tile_step=SP_PRESET.tile_step_size,
        label_resampling=SP_PRESET.label_resampling,
        strict=(
            "--fail-on-volume-error"
            if config["pseudolabel"]["fail_on_volume_error"]
            else ""
        ),
    shell:
        "nnUNet_extTrainer={params.trainers:q} python -m cadsflow.pseudolabel --group {wildcards.group}"
        " --model {input.model:q} --volumes {params.volumes:q} --out-dir {output.maps:q}"
        " --report {output.report:q} {params.brain} --postprocessing {input.postprocessing:q}"
        " --device {params.device} --tile-step-size {params.tile_step}"
        " --label-resampling {params.label_resampling} --threads {threads} {params.strict}"
        " --log {log:q} 2>> {log:q}"


rule pseudolabel_status:
    """Collect every group's shard reports into one table: each volume's label map path, or why it has none."""
    input:
        reports=expand(
            "results/pseudolabels/{group}/shard_{shard}.tsv",
            group=SP_GROUPS,
            shard=pl_shards(),
        ),
        maps=expand(
            "results/pseudolabels/{group}/shard_{shard}",
            group=SP_GROUPS,
            shard=pl_shards(),
        ),
    output:
        status="results/pseudolabels/status.tsv",
    log:
        "logs/pseudolabel/status.log",
    benchmark:
        "benchmarks/pseudolabel/status.tsv"
    conda:
        "../envs/nnunet.yaml"
    resources:
        mem_mb=1000,
        runtime=lambda wc, attempt: 10 * attempt,
    script:
        "../workflow_scripts/entry/pseudolabel_status.py"
