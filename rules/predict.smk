# Stage: predict (cads-predict over a sheet). New CTs (config predict.sheet: volume_id, image) are segmented with
# the factory's final models (rules/final.smk) in batches: one job per batch loads each model once; a refused
# (non-CT, unreadable) or failing volume is a line of the batch report, not a failed job. Per volume:
# results/predict/{batch}/{volume_id}/ with the group maps and the combined map on the input's grid, statistics,
# preview and (DICOM input) DICOM-SEG.


include: "predict_lookups.smk"


rule predict_batch:
    """Segment a batch of new CTs with the factory's models (cads-predict): validate, standardize, the groups in
    dependency order, clean-up, restore onto each input's grid."""
    input:
        models=pr_model_inputs,
        images=lambda wc: [PR_VOLUMES[v] for v in PR_BATCHES[wc.batch]],
    output:
        folder=directory("results/predict/{batch}"),
        report="results/predict/{batch}.tsv",
    log:
        "logs/predict/{batch}.log",
    benchmark:
        "benchmarks/predict/{batch}.tsv"
    wildcard_constraints:
        batch=r"predict\.\d{4}",
    conda:
        "../envs/nnunet.yaml"
    threads: SP_PRESET.threads
    resources:
        **sp_job_resources(
            int(
                SP_PRESET.infer_runtime_min_per_volume
                * len(PR_GROUPS)
                * PR["volumes_per_batch"]
            )
            + 10
        ),
    params:
        volumes=lambda wc: pr_batch_volumes(wc.batch),
        models=lambda wc: PR["models"],  # a folder of markers, not a file this job reads by name
        settings={**PR, "device": PR["device"] or SP_PRESET.device},
        standardize=config["standardize"],
    script:
        "../workflow_scripts/entry/predict_batch.py"
