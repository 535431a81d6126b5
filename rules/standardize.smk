# Stage: standardize (Online Methods 1.2). Per volume; bad volumes are quarantined, not failed.


rule standardize:
    """Validate a volume, reorient it to RAS, resample to 1.5 mm, reduce its affine; or quarantine it."""
    input:
        image=lambda wc: existing(volume(wc.volume_id).image),
        label=lambda wc: existing(volume(wc.volume_id).label),
    output:
        directory("results/standardized/{volume_id}"),
    log:
        "logs/standardize/{volume_id}.log",
    benchmark:
        "benchmarks/standardize/{volume_id}.tsv"
    group:
        "per_volume"
    conda:
        "../envs/cads.yaml"
    resources:
        mem_mb=mem_from_inputs(1000, 60),
        runtime=20,
        cpus_per_task=1,
    params:
        volume=lambda wc: volume(wc.volume_id),
        known_values=lambda wc: known_label_values(wc.volume_id),
        settings=config["standardize"],
    script:
        "../workflow_scripts/entry/standardize.py"


rule quarantine_table:
    """Collect every volume's standardization record into the quarantine table and a status summary."""
    input:
        expand("results/standardized/{volume_id}", volume_id=VOLUMES),
    output:
        quarantine="results/quarantine/quarantine.tsv",
        status="results/quarantine/status.tsv",
    log:
        "logs/quarantine/quarantine_table.log",
    benchmark:
        "benchmarks/quarantine/quarantine_table.tsv"
    conda:
        "../envs/cads.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
        cpus_per_task=1,
    script:
        "../workflow_scripts/entry/quarantine_table.py"
