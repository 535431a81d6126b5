# Stage: evaluate (Online Methods 5.1-5.4). Per test volume: Dice, NSD (3 mm), HD, HD95 of every structure of
# its source's evaluation classes (config/evaluation_alignment.yaml), with the paper's false-negative penalty and
# exclusions, for the model (by default the final models' test predictions), the systems it is compared with
# (config evaluation.comparisons; by default the specialists' pseudo-labels) and optionally a baseline (its labels
# mapped onto the unified structures). Then per dataset and per structure: statistics, paired tests of the model
# against each other system, tables and figures for the report.
#
# Two ways to name what is scored (config evaluation.*):
# - reference_dir "" (default): the sheet's test split; references are the standardized label maps, predictions
#   evaluation.prediction (a path with {volume_id} and optionally {group}) on the same grid, each volume aligned
#   by its sheet source;
# - reference_dir a folder: every {volume_id}.nii.gz in it (one listing at parse time, the only file-system scan
#   of this stage), scored against evaluation.prediction with the alignment of reference_source.
# Volumes are scored in batches (the standardize batches' test members, or chunks of the folder's volumes of
# batching.volumes_per_batch): one job per batch, one score table per batch, rows per volume and structure.
# Needs from common.smk: config, VOLUMES, BATCHES, BATCH_OF, volume, volumes_in_split, standardized, project_path.


include: "evaluate_lookups.smk"


rule evaluation_reference_volumes:
    """Per evaluation class, the mean reference volume over the cohort's labelled volumes (Table A.5's role)."""
    input:
        references=ev_reference_inputs(ev_labelled_volumes()),
    output:
        table=EV_COHORT_VOLUMES,
    log:
        "logs/evaluation/reference_volumes.log",
    benchmark:
        "benchmarks/evaluation/reference_volumes.tsv"
    conda:
        "../envs/stats.yaml"
    resources:
        mem_mb=4000,
        runtime=lambda wc, attempt: (10 + len(ev_labelled_volumes()) // 60) * attempt,
    params:
        references=[ev_reference(v) for v in ev_labelled_volumes()],
        sources=[ev_source(v) for v in ev_labelled_volumes()],
        alignment=str(project_path(EV["alignment"])),
        registry=config["registry"],
        statistic=EV["reference_volume_statistic"],
        label_space=str(project_path(config["label_space"])),
    script:
        "../workflow_scripts/entry/evaluate_reference_volumes.py"


rule evaluate_batch:
    """Score each test volume of a batch (model, comparison systems, and baseline if configured) against its
    reference."""
    input:
        references=lambda wc: ev_reference_inputs(EV_BATCHES[wc.batch]),
        predictions=lambda wc: ev_prediction_inputs(EV_BATCHES[wc.batch]),
        baselines=lambda wc: [
            ev_baseline(v) for v in EV_BATCHES[wc.batch] if ev_baseline(v)
        ],
        reference_volumes=ev_reference_volumes(),
    output:
        scores="results/evaluation/batches/{batch}.tsv",
    log:
        "logs/evaluation/batches/{batch}.log",
    benchmark:
        "benchmarks/evaluation/batches/{batch}.tsv"
    wildcard_constraints:
        batch=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    conda:
        "../envs/stats.yaml"
    resources:
        mem_mb=lambda wc, attempt: 4000 * 2 ** (attempt - 1),
        runtime=lambda wc, attempt: (5 + 2 * len(EV_BATCHES[wc.batch])) * attempt,
    params:
        volumes=lambda wc: ev_batch_volumes(wc.batch),
        alignment=str(project_path(EV["alignment"])),
        registry=config["registry"],
        baseline_mapping=str(baseline_mapping_path(EV["baseline"]["name"])),
        tolerance_mm=EV["nsd_tolerance_mm"],
        false_negative_rule=EV["false_negative_rule"],
        label_space=str(project_path(config["label_space"])),
    script:
        "../workflow_scripts/entry/evaluate_batch.py"


rule evaluation_report:
    """Aggregate all volumes: per structure and per dataset statistics, tests of the model vs. the specialists (and
    the baseline), figures."""
    input:
        scores=expand("results/evaluation/batches/{batch}.tsv", batch=EV_BATCHES),
    output:
        scores=report(
            EV_REPORT_FILES["scores"],
            caption="report/evaluation_scores.rst",
            category="Evaluation",
            subcategory="Tables",
        ),
        structures=report(
            EV_REPORT_FILES["structures"],
            caption="report/evaluation_structures.rst",
            category="Evaluation",
            subcategory="Tables",
        ),
        datasets=report(
            EV_REPORT_FILES["datasets"],
            caption="report/evaluation_datasets.rst",
            category="Evaluation",
            subcategory="Tables",
        ),
        comparison=report(
            EV_REPORT_FILES["comparison"],
            caption="report/evaluation_comparison.rst",
            category="Evaluation",
            subcategory="Tables",
        ),
        summary=report(
            EV_REPORT_FILES["summary"],
            caption="report/evaluation_summary.rst",
            category="Evaluation",
            subcategory="Tables",
        ),
        radar=report(
            EV_REPORT_FILES["radar"],
            caption="report/evaluation_radar.rst",
            category="Evaluation",
            subcategory="Figures",
        ),
        bars=report(
            EV_REPORT_FILES["bars"],
            caption="report/evaluation_bars.rst",
            category="Evaluation",
            subcategory="Figures",
        ),
        bubbles=report(
            EV_REPORT_FILES["bubbles"],
            caption="report/evaluation_bubbles.rst",
            category="Evaluation",
            subcategory="Figures",
        ),
    log:
        "logs/evaluation/report.log",
    benchmark:
        "benchmarks/evaluation/report.tsv"
    conda:
        "../envs/stats.yaml"
    resources:
        mem_mb=4000,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        bootstrap_samples=EV["bootstrap_samples"],
        seed=EV["seed"],
        correction=EV["correction"],
        alpha=EV["alpha"],
        others=ev_report_systems(),
    script:
        "../workflow_scripts/entry/evaluate_report.py"
