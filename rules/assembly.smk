# Stage: assembly (Online Methods 2.5, 3.2, 5.2; Tables A.4-A.5). One job per standardize batch assembles every
# group of its volumes from the flavors the ranking chose (progressive merge, vertebra and rib blocks, ground truth
# on top), the spine group before the rib group, whose repair reads the spine just assembled; maps go to
# results/assembled/{group}/{volume_id}.nii.gz with a per-volume provenance beside them, and the batch's provenance
# table is the declared output. Then the dataset card from all batches' tables and the stages' dataset.json files.


include: "assembly_lookups.smk"


rule assemble_batch:
    """Assemble every group of one batch's volumes; ribs repaired after the spine; quarantined volumes get a line.

    Resume after a kill: the job keeps a marker beside its table while it runs; a rerun that finds it keeps every
    map whose stored fingerprint (sha256 of its inputs and settings, in the NIfTI header) is current, redoes the
    rest, and always rewrites the batch table.
    """
    input:
        priority=AS_PRIORITY,
        predictions=as_prediction_reports,
        gt=as_gt_input,
        standardized="results/standardized/{batch}",
        # its content shapes the maps (blocks, rib constants): a changed config reruns the batches
        config=AS_CONFIG,
    output:
        provenance=f"{AS_DIR}/provenance/{{batch}}.tsv",
    log:
        "logs/assembly/{batch}.log",
    benchmark:
        "benchmarks/assembly/{batch}.tsv"
    conda:
        "../envs/nnunet.yaml"
    resources:
        mem_mb=lambda wc, attempt: 8000 * 2 ** (attempt - 1),
        runtime=lambda wc, attempt: (10 + 2 * len(BATCHES[wc.batch])) * attempt,
    params:
        groups=SP_GROUPS,
        volumes=lambda wc: BATCHES[wc.batch],
        flavors=as_flavor_args,
        gt=as_gt_args,
        out_dir=lambda wc: f"{AS_DIR}/{{group}}",
    shell:
        "python -m cadsflow.assembly --log {log:q} batch --groups {params.groups} --volumes {params.volumes:q}"
        " {params.flavors} --priority {input.priority:q} {params.gt} --standardized {input.standardized:q}"
        " --config {input.config:q} --out-dir {params.out_dir:q} --batch-provenance {output.provenance:q}"
        " 2>> {log:q}"


rule dataset_card:
    """The dataset card: structures' occurrence and median ml, training images per stage and group, origins."""
    input:
        provenance=expand(f"{AS_DIR}/provenance/{{batch}}.tsv", batch=BATCHES),
        datasets=as_card_datasets,
    output:
        structures=AS_CARD["structures"],
        training=AS_CARD["training"],
        origins=AS_CARD["origins"],
        summary=AS_CARD["summary"],
        page=report(
            AS_CARD["page"],
            caption="report/dataset_card.rst",
            category="Dataset card",
        ),
    log:
        "logs/assembly/dataset_card.log",
    benchmark:
        "benchmarks/assembly/dataset_card.tsv"
    conda:
        "../envs/nnunet.yaml"
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 15 * attempt,
    params:
        datasets=as_card_args,
        out_dir=lambda wc, output: str(Path(output.summary).parent),
    shell:
        "python -m cadsflow.assembly --log {log:q} card --provenance {input.provenance:q} {params.datasets}"
        " --out-dir {params.out_dir:q} 2>> {log:q}"
