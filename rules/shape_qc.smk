# Stage: shape_qc (Online Methods 2.2). Per group, an implicit shape prior (auto-decoder) learns the group's
# ground-truth label maps; every pseudo-label is reconstructed by it and scored per structure with HD90 between the
# pseudo-label and its reconstruction; the worst `exclude_fraction` of a group's images leave the Shape flavor.
# One training job per group, scoring per group and a few pseudo-label shards (the volumes whose pseudo-label is ok),
# one exclusion and one gallery job per group. Sizes and step counts are presets (config/shape_qc.yaml).


include: "shape_qc_lookups.smk"


rule shape_qc_train:
    """Train the group's shape prior on the ground-truth maps of its specialist's training volumes."""
    input:
        gt=sq_training_batches,
    output:
        prior=f"{SQ_DIR}/{{group}}/prior.pt",
    log:
        "logs/shape_qc/{group}/train.log",
    benchmark:
        "benchmarks/shape_qc/{group}/train.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
    priority: GATING_PRIORITY
    conda:
        "../envs/nnunet.yaml"
    threads: SQ_PRESET.threads
    resources:
        **sq_resources(60 if SQ_PRESET.device == "cpu" else 1440),
    params:
        maps=sq_training_maps,
        ids=lambda wc: sq_training_ids(wc.group),
        args=SQ_TORCH_ARGS,
    shell:
        "python -m cadsflow.shape_qc train --group {wildcards.group} --labels {params.maps:q}"
        " --volume-ids {params.ids:q} --skip-missing --out {output.prior:q} {params.args}"
        " --threads {threads} --log {log:q} 2>> {log:q}"


rule shape_qc_score:
    """Reconstruct each pseudo-label of some shards with the group's prior; HD90 per structure (one table per job)."""
    input:
        prior=f"{SQ_DIR}/{{group}}/prior.pt",
        reports=lambda wc: [
            pl_shard_report(wc.group, k) for k in sq_part_shards(wc.part)
        ],
        # the shards' declared map folders (the CLI finds each report's maps in the folder beside it)
        maps=lambda wc: pl_shard_dirs(wc.group, sq_part_shards(wc.part)),
    output:
        table=f"{SQ_DIR}/{{group}}/part_{{part}}.tsv",
    log:
        "logs/shape_qc/{group}/part_{part}.log",
    benchmark:
        "benchmarks/shape_qc/{group}/part_{part}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
        part=r"\d+",
    priority: GATING_PRIORITY
    conda:
        "../envs/nnunet.yaml"
    threads: SQ_PRESET.threads
    resources:
        **sq_resources(10 + PL_SHARDS.size * SQ_SHARDS_PER_JOB),
    params:
        args=SQ_TORCH_ARGS,
    shell:
        "python -m cadsflow.shape_qc score --prior {input.prior:q} --shard-report {input.reports:q}"
        " --out {output.table:q} {params.args} --threads {threads}"
        " --log {log:q} 2>> {log:q}"


rule shape_qc_exclude:
    """Per image a score from its structures' HD90 (robust z per structure, mean); exclude the worst fraction."""
    input:
        tables=lambda wc: [sq_shard_table(wc.group, part) for part in SQ_PARTS],
    output:
        excluded=f"{SQ_DIR}/{{group}}/excluded.tsv",
        scores=f"{SQ_DIR}/{{group}}/scores.tsv",
        images=f"{SQ_DIR}/{{group}}/images.tsv",
    log:
        "logs/shape_qc/{group}/exclude.log",
    benchmark:
        "benchmarks/shape_qc/{group}/exclude.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
    priority: GATING_PRIORITY
    conda:
        "../envs/nnunet.yaml"
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    params:
        args=SQ_ARGS,
        fraction=(
            f"--fraction {SQ['exclude_fraction']}"
            if SQ["exclude_fraction"] is not None
            else ""
        ),
    shell:
        "python -m cadsflow.shape_qc exclude --scores {input.tables:q} --out {output.excluded:q}"
        " --merged-out {output.scores:q} --images-out {output.images:q} {params.args} {params.fraction}"
        " --log {log:q} 2>> {log:q}"


rule shape_qc_gallery:
    """The group's worst-scored volumes: CT, pseudo-label and reconstruction outlines through the worst structure
    (a CPU job: a handful of reconstructions)."""
    input:
        prior=f"{SQ_DIR}/{{group}}/prior.pt",
        tables=lambda wc: [sq_shard_table(wc.group, part) for part in SQ_PARTS],
        maps=lambda wc: pl_shard_dirs(wc.group),
    output:
        gallery=report(
            f"{SQ_DIR}/{{group}}/gallery.png",
            caption="report/shape_qc_gallery.rst",
            category="Shape QC",
            subcategory="{group}",
        ),
    log:
        "logs/shape_qc/{group}/gallery.log",
    benchmark:
        "benchmarks/shape_qc/{group}/gallery.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
    conda:
        "../envs/nnunet.yaml"
    threads: SQ_PRESET.threads
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    params:
        image_glob=lambda wc: "results/standardized/*/{volume_id}/image.nii.gz",
        args=SQ_TORCH_ARGS,
    shell:
        "python -m cadsflow.shape_qc gallery --prior {input.prior:q} --scores {input.tables:q}"
        " --label-dir {input.maps:q} --image-glob {params.image_glob:q} --out {output.gallery:q}"
        " {params.args} --device cpu --threads {threads} --log {log:q} 2>> {log:q}"
