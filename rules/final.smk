# Stage: final (Online Methods 4.1, 6.1). One CADS model per group, trained on the assembled labels of every
# non-test volume (head groups: the paper's subsets), with inverse-frequency oversampling of rare structures and
# mirroring off; then its predictions of the test split, which the evaluation scores by default: final_predict
# declares results/final/predictions/{group}/ (only its {volume_id}.nii.gz maps) with its report {group}.tsv beside.
# config/final.yaml holds the subsets, the oversampling rule and the presets (config["preset"] picks one by name).
# nnU-Net's folders: results/final/nnUNet_raw, nnUNet_preprocessed and models (nnUNet_results).


include: "final_lookups.smk"


rule final_dataset:
    """Training volumes, label counts, head subsets and oversampling table of a group; its nnU-Net raw dataset from
    the assembled maps; then nnU-Net's fingerprint, plans and preprocessing with the final preset (one CPU job).
    """
    input:
        provenance=[as_provenance(b) for b in FN_TRAINING_BATCHES],
        standardized=[f"results/standardized/{b}" for b in FN_TRAINING_BATCHES],
        assembled=fn_assembled_dirs,  # the group's assembled maps (batch folders) the dataset links
        # its content decides the subsets and weights: a changed rule rebuilds the dataset (input trigger)
        final_config=FN_CONFIG,
    output:
        dataset_json=f"{FN_RAW}/Dataset{{group}}_{{name}}/dataset.json",
        counts=f"{FN_SAMPLING}/Dataset{{group}}_{{name}}.counts.tsv",
        table=report(
            f"{FN_SAMPLING}/Dataset{{group}}_{{name}}.tsv",
            caption="report/final_sampling.rst",
            category="Final model",
            subcategory="Oversampling",
        ),
        planned=f"{FN_PREPROCESSED}/Dataset{{group}}_{{name}}.planned",
    log:
        "logs/final/dataset_{group}_{name}.log",
    benchmark:
        "benchmarks/final/dataset_{group}_{name}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
        name=r"[A-Za-z0-9]+",
    conda:
        "../envs/nnunet.yaml"
    threads: FN_PRESET.num_processes
    resources:
        mem_mb=lambda wc, attempt: FN_PRESET.mem_mb * attempt,
        runtime=lambda wc, attempt: FN_PRESET.plan_runtime_min * attempt,
    params:
        candidates=fn_training_candidates,
        preset=FN_PRESET.name,
        nnunet_results=FN_MODELS,  # nnUNet_raw and nnUNet_preprocessed: the outputs' folders
        settings=FN_PRESET.model_settings,  # a changed model setting replans (Snakemake's params rerun trigger)
    script:
        "../workflow_scripts/entry/final_dataset.py"


rule final_train:
    """Train the group's final model (oversampling trainer, mirroring off, fold all) on its preprocessed dataset."""
    input:
        planned=lambda wc: fn_planned(wc.group),
        table=lambda wc: fn_sampling_table(wc.group),
    output:
        # a paper model costs 80-160 GPU hours: write-protected like the specialists (specialists.protect_models)
        marker=sp_protected(f"{FN_MODELS}/{{group}}.done"),
    log:
        "logs/final/train_{group}.log",
    benchmark:
        "benchmarks/final/train_{group}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
    conda:
        "../envs/nnunet.yaml"
    threads: FN_PRESET.threads
    resources:
        **fn_job_resources(FN_PRESET.train_runtime_min),
    params:
        args=FN_ARGS,
        settings=FN_PRESET.model_settings,  # a changed model setting retrains
    shell:
        "python -m cadsflow.final train --group {wildcards.group} --planned {input.planned:q}"
        " --table {input.table:q} {params.args} --marker {output.marker:q} --threads {threads}"
        " --log {log:q} 2>> {log:q}"


rule final_predict:
    """Predict the test split with the group's final model (one model load), with the pseudo-labels' clean-up and
    head gating (557/558 by the final model's own 553 predictions); report each volume.
    """
    input:
        model=lambda wc: fn_model_marker(wc.group),
        batches=sorted({f"results/standardized/{BATCH_OF[v]}" for v in FN_TEST_VOLUMES}),
        brain=fn_brain_inputs,  # 557/558: the final 553 (552) prediction folders
        postprocessing=project_path(config["pseudolabel"]["postprocessing"]),
    output:
        report=fn_test_report("{group}"),
        maps=directory(fn_prediction_dir("{group}")),
    log:
        "logs/final/predict_{group}.log",
    benchmark:
        "benchmarks/final/predict_{group}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
    conda:
        "../envs/nnunet.yaml"
    threads: FN_PRESET.threads
    resources:
        **fn_job_resources(
            int(FN_PRESET.infer_runtime_min_per_volume * len(FN_TEST_VOLUMES)) + 5
        ),
    params:
        volumes=[standardized(v) for v in FN_TEST_VOLUMES],
        brain=fn_brain_args,
        trainers=str(TRAINERS_DIR),
        device=FN_PRESET.device,
        tile_step=FN_PRESET.tile_step_size,
        label_resampling=FN_PRESET.label_resampling,
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
