# Stage: assembly (Online Methods 2.5, 3.2, 5.2; Tables A.4-A.5). One job per standardize batch assembles every
# group of its volumes from the flavors the ranking chose (progressive merge, vertebra and rib blocks, ground truth
# on top), the spine group before the rib group, whose repair reads the spine just assembled. A batch job declares,
# for each group, its folder results/assembled/{group}/{batch}/ ({volume_id}.nii.gz and {volume_id}.provenance.tsv)
# and the batch's provenance table; Snakemake deletes those before it runs the job, so a rerun of one killed batch
# redoes that batch only. Then the dataset card from all batches' tables and the stages' dataset.json files, with
# files.tsv: where each volume's map of each group lies.


include: "assembly_lookups.smk"


rule assemble_batch:
    """Assemble every group of one batch's volumes; ribs repaired after the spine; quarantined volumes get a line.

    Resume after a kill: the job keeps a marker beside its table while it runs; a rerun that finds it keeps every
    map whose stored fingerprint (sha256 of its inputs and settings, in the NIfTI header) is current, redoes the
    rest, and always rewrites the batch table.
    """
    input:
        priority=AS_PRIORITY,
        predictions=as_prediction_dirs,  # the flavor prediction jobs' folders holding the batch's volumes
        gt=as_gt_input,
        standardized="results/standardized/{batch}",
        # its content shapes the maps (blocks, rib constants): a changed config reruns the batches
        config=AS_CONFIG,
    output:
        provenance=as_provenance("{batch}"),
        maps=directory(as_batch_dirs("{batch}")),
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
        out_dir=lambda wc: as_batch_dir("{group}", wc.batch),
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
        files=AS_CARD["files"],
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
        maps_root=lambda wc, output: str(Path(output.summary).parent.parent),  # AS_DIR
    shell:
        "python -m cadsflow.assembly --log {log:q} card --provenance {input.provenance:q} {params.datasets}"
        " --out-dir {params.out_dir:q} --maps-root {params.maps_root:q} 2>> {log:q}"
