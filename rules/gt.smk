# Stage: gt (Online Methods 1.2, 2.1). Source labels -> group label maps with provenance (sparse slices
# interpolated, brain tissue by atlas registration); one nnU-Net v2 raw dataset per specialist group (face blur of
# new hospital head CTs is rules/anonymize.smk: it waits for group 553's pseudo-labels). Per batch of the standardize stage (one source per batch):
# results/gt/{batch}/{volume_id}/ holds record.json, group_<G>.nii.gz and provenance.tsv (cadsflow.gt.volume).
# Needs from common.smk: config, VOLUMES, SOURCES, BATCHES, BATCH_OF, batch_volumes, standardized.


include: "gt_lookups.smk"


rule gt_phantom_atlas:
    """Draw the demo's deterministic phantom head atlas (CT-like image, group-557 tissue labels)."""
    output:
        image="results/atlas/phantom_image.nii.gz",
        labels="results/atlas/phantom_labels.nii.gz",
    log:
        "logs/atlas/phantom_atlas.log",
    benchmark:
        "benchmarks/atlas/phantom_atlas.tsv"
    conda:
        "../envs/imaging.yaml"
    resources:
        mem_mb=2000,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        seed=config["gt"]["atlas"]["phantom_seed"],
    script:
        "../workflow_scripts/entry/gt_phantom_atlas.py"


rule gt_batch:
    """Map each volume's source labels into group label maps with provenance; interpolate sparse slices; register
    the brain atlas to an atlas source's CTs; a quarantined or unlabelled volume gets a record saying so.
    """
    input:
        unpack(gt_atlas_input),
        standardized="results/standardized/{batch}",
    output:
        directory("results/gt/{batch}"),
    log:
        "logs/gt/{batch}.log",
    benchmark:
        "benchmarks/gt/{batch}.tsv"
    priority: GATING_PRIORITY
    conda:
        "../envs/imaging.yaml"
    threads: lambda wc: GT_REGISTRATION["threads"] if gt_is_atlas_batch(wc.batch) else 1
    resources:
        mem_mb=lambda wc, attempt: (8000 if gt_is_atlas_batch(wc.batch) else 4000)
        * 2 ** (attempt - 1),
        runtime=lambda wc, attempt: (
            5 + (10 if gt_is_atlas_batch(wc.batch) else 1) * len(BATCHES[wc.batch])
        )
        * attempt,
    params:
        volumes=lambda wc: BATCHES[wc.batch],
        source=lambda wc: SOURCES.get(gt_batch_source(wc.batch)),
        registration=GT_REGISTRATION_SETTINGS,
        sparse_labels=config["gt"]["sparse_labels"],
    script:
        "../workflow_scripts/entry/gt_batch.py"


rule gt_group_dataset:
    """Export one group's training set as an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json)."""
    input:
        gt=lambda wc: sorted({f"results/gt/{BATCH_OF[v]}" for v in gt_training_ids(wc)}),
        standardized=lambda wc: sorted(
            {f"results/standardized/{BATCH_OF[v]}" for v in gt_training_ids(wc)}
        ),
    output:
        dataset_json=f"{GT_NNUNET_RAW}/Dataset{{group}}_{{name}}/dataset.json",
        images=directory(f"{GT_NNUNET_RAW}/Dataset{{group}}_{{name}}/imagesTr"),
        labels=directory(f"{GT_NNUNET_RAW}/Dataset{{group}}_{{name}}/labelsTr"),
        cases=f"{GT_NNUNET_RAW}/Dataset{{group}}_{{name}}/cads_cases.tsv",
    log:
        "logs/gt/dataset/Dataset{group}_{name}.log",
    benchmark:
        "benchmarks/gt/dataset/Dataset{group}_{name}.tsv"
    wildcard_constraints:
        group=r"55[1-9]",
        name=r"[A-Za-z0-9]+",
    conda:
        "../envs/imaging.yaml"
    resources:
        mem_mb=2000,
        runtime=lambda wc, attempt: (10 + len(gt_training_ids(wc)) // 20) * attempt,
    params:
        training=lambda wc: GROUP_TRAINING[int(wc.group)],
        candidates=lambda wc: [
            CandidateVolume(v, VOLUMES[v].source, standardized(v), gt_folder(v))
            for v in gt_training_ids(wc)
        ],
    script:
        "../workflow_scripts/entry/gt_dataset.py"
