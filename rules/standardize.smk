# Stage: standardize (Online Methods 1.2). Per batch of volumes; bad volumes are quarantined, not failed.
# With demo.enabled the volumes are the embedded phantom cohort, which the demo_cohort rule writes first.


include: "standardize_lookups.smk"


if DEMO_FILES:

    rule demo_cohort:
        """Write the embedded phantom demo cohort (config/demo_cohort.yaml): images, labels, registry, sheet."""
        input:
            spec=project_path("config/demo_cohort.yaml"),
        output:
            DEMO_FILES,
        log:
            "logs/demo/demo_cohort.log",
        benchmark:
            "benchmarks/demo/demo_cohort.tsv"
        conda:
            "../envs/imaging.yaml"
        resources:
            mem_mb=lambda wc, attempt: 2000 * attempt,
            runtime=lambda wc, attempt: 10 * attempt,
        params:
            generator=DEMO_GENERATOR,  # a changed phantom generator rewrites the cohort
        script:
            "../workflow_scripts/entry/demo_cohort.py"


rule standardize:
    """Validate each volume of a batch, reorient to RAS, resample to 1.5 mm, reduce the affine; or quarantine it."""
    input:
        batch_inputs,
    output:
        directory("results/standardized/{batch}"),
    log:
        "logs/standardize/{batch}.log",
    benchmark:
        "benchmarks/standardize/{batch}.tsv"
    priority: GATING_PRIORITY
    conda:
        "../envs/imaging.yaml"
    resources:
        mem_mb=mem_for_largest_input(1000, 60),
        runtime=lambda wc, attempt: (5 + 2 * len(BATCHES[wc.batch])) * attempt,
    params:
        volumes=lambda wc: batch_volumes(wc.batch),
        known_values=lambda wc: known_label_values(wc.batch),
        settings=config["standardize"],
    script:
        "../workflow_scripts/entry/standardize.py"


rule quarantine_table:
    """Collect every volume's standardization record into the quarantine table and a status summary."""
    input:
        expand("results/standardized/{batch}", batch=BATCHES),
    output:
        quarantine="results/quarantine/quarantine.tsv",
        status="results/quarantine/status.tsv",
    log:
        "logs/quarantine/quarantine_table.log",
    benchmark:
        "benchmarks/quarantine/quarantine_table.tsv"
    conda:
        "../envs/imaging.yaml"
    resources:
        mem_mb=2000,
        runtime=lambda wc, attempt: 30 * attempt,
    script:
        "../workflow_scripts/entry/quarantine_table.py"
