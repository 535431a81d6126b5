# Stage: ranking (Online Methods 2.4, Algorithm 1). Per group, every flavor's validation predictions are scored per
# structure and volume (Dice, HD95) by the evaluation engine with its dataset alignment and false-negative rule;
# volumes of the group's training sources are ID, the others OOD. Then, per structure, Algorithm 1 orders the
# flavors (cadsflow.ranking): results/ranking/priority.tsv with its decision trail, and the selection chart.


include: "ranking_lookups.smk"


rule flavor_scores:
    """Score each flavor's validation predictions of the group per structure and volume (Dice, HD95; ID or OOD)."""
    input:
        report=fp_validation_report("{group}"),
        predictions=fp_validation_dir("{group}"),  # flavor_validate's folder: {flavor}/{volume_id}.nii.gz
        references=fp_batches(RK_SCORED),
        reference_volumes=lambda wc: ev_reference_volumes(),
    output:
        scores=f"{RK_DIR}/scores/{{group}}.tsv",
    log:
        "logs/ranking/scores_{group}.log",
    benchmark:
        "benchmarks/ranking/scores_{group}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
    conda:
        "../envs/stats.yaml"
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: (5 + len(RK_SCORED) * len(FP_FLAVORS)) * attempt,
    params:
        volumes=rk_volume_args,
        training_sources=rk_training_sources,
        alignment=str(project_path(config["evaluation"]["alignment"])),
        registry=config["registry"],
        label_space=str(project_path(config["label_space"])),
        false_negative_rule=config["evaluation"]["false_negative_rule"],
        tolerance_mm=config["evaluation"]["nsd_tolerance_mm"],
    shell:
        "python -m cadsflow.flavors.scores --group {wildcards.group} --report {input.report:q}"
        " --prediction-root {input.predictions:q} {params.volumes} --training-sources {params.training_sources:q}"
        " --out {output.scores:q} --alignment {params.alignment:q} --registry {params.registry:q}"
        " --reference-volumes {input.reference_volumes:q} --label-space {params.label_space:q}"
        " --false-negative-rule {params.false_negative_rule} --tolerance-mm {params.tolerance_mm}"
        " --log {log:q} 2>> {log:q}"


rule rank_flavors:
    """Algorithm 1 per structure of every group: the flavors' priority order, its decision trail and the chart."""
    input:
        scores=[rk_scores(g) for g in SP_GROUPS],
        gt_share=rk_gt_share_tables(),
        config=str(FP_CONFIG),
    output:
        priority=RK_PRIORITY,
        figure=report(RK_FIGURE, caption="report/ranking.rst", category="Ranking"),
    log:
        "logs/ranking/rank.log",
    benchmark:
        "benchmarks/ranking/rank.tsv"
    conda:
        "../envs/stats.yaml"
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        groups=SP_GROUPS,
        label_space=str(project_path(config["label_space"])),
        gt_share=rk_gt_share_args(),
    shell:
        "python -m cadsflow.ranking --scores {input.scores:q} --out {output.priority:q}"
        " --figure {output.figure:q} --config {input.config:q} --groups {params.groups}"
        " --label-space {params.label_space:q} {params.gt_share} --log {log:q} 2>> {log:q}"
