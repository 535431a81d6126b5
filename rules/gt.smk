# Stage: gt (Online Methods 1.2, 2.1). Source labels -> group label maps with provenance (sparse slices
# interpolated, brain tissue by atlas registration); face blur of new hospital head CTs; one nnU-Net v2 raw
# dataset per specialist group. Per batch of the standardize stage (one source per batch):
# results/gt/{batch}/{volume_id}/ holds record.json, group_<G>.nii.gz and provenance.tsv (cadsflow.gt.volume).
# Needs from common.smk: config, VOLUMES, SOURCES, BATCHES, BATCH_OF, batch_volumes, standardized.
# Defines GROUP_TRAINING (group -> GroupTraining: dataset name, training sources) unless common.smk already does,
# and GT_TARGETS / GT_DATASET_TARGETS / GT_ANONYMIZE_TARGETS for rule all.

from cadsflow.gt.anonymize import FACE_BLUR_SIGMA_VOXELS, FACE_MARGIN_VOXELS
from cadsflow.gt.atlas import PHANTOM_SHAPE, PHANTOM_SPACING_MM
from cadsflow.gt.nnunet_dataset import CandidateVolume
from cadsflow.gt.training import (
    atlas_sources,
    check_known_sources,
    load_group_training,
    training_volume_ids,
)

GT = config.get("gt", {})
GT_PRESET = GT.get("training_preset") or config["preset"]
if "GROUP_TRAINING" not in globals():
    GROUP_TRAINING = load_group_training(
        GT.get("group_training", "config/group_training.yaml"), GT_PRESET
    )
GT_ATLAS_SOURCES = atlas_sources(GROUP_TRAINING)
check_known_sources(
    GROUP_TRAINING,
    set(SOURCES) | {v.source for v in VOLUMES.values()},
    f"group training preset {GT_PRESET!r}: ",
)
GT_NNUNET_RAW = config.get("specialists", {}).get(
    "nnunet_raw", "results/specialists/nnUNet_raw"
)
GT_ATLAS = GT.get("atlas", {})
GT_ATLAS_IMAGE = GT_ATLAS.get("image") or "results/atlas/phantom_image.nii.gz"
GT_ATLAS_LABELS = GT_ATLAS.get("labels") or "results/atlas/phantom_labels.nii.gz"
GT_REGISTRATION = GT.get("registration", {})
GT_FACE = GT.get("face_mask", {})
GT_FACE_PATTERN = (
    GT_FACE.get("pattern") or "results/pseudolabels/553/{volume_id}.nii.gz"
)
GT_FACE_VALUE = GT_FACE.get("value") or LABEL_SPACE.group_label_map(553)["face"]
GT_BLUR = GT.get("face_blur", {})


def gt_folder(volume_id):
    """A volume's ground-truth folder (inside its batch's directory output)."""
    return f"results/gt/{BATCH_OF[volume_id]}/{volume_id}"


def gt_batch_source(batch):
    return VOLUMES[BATCHES[batch][0]].source  # batches hold one source each


def gt_is_atlas_batch(batch):
    return gt_batch_source(batch) in GT_ATLAS_SOURCES


def gt_needs_batch(batch):
    """Batches with something to do: a labelled volume, or a source whose CTs get atlas labels."""
    return gt_is_atlas_batch(batch) or any(VOLUMES[v].has_label for v in BATCHES[batch])


def gt_atlas_input(wildcards):
    if gt_is_atlas_batch(wildcards.batch):
        return {"atlas_image": GT_ATLAS_IMAGE, "atlas_labels": GT_ATLAS_LABELS}
    return {}


def gt_training_ids(wildcards):
    training = GROUP_TRAINING[int(wildcards.group)]
    if training.name != wildcards.name:
        asked = f"Dataset{wildcards.group}_{wildcards.name}"
        raise ValueError(
            f"{training.dataset_name} is group {wildcards.group}'s dataset, not {asked}"
        )
    return training_volume_ids(training, VOLUMES)


def gt_face_inputs(wildcards):
    """What the face masks of a batch wait for: group 553's shard reports when they are pseudo-labels."""
    if "pl_shard_report_of" in globals() and not GT_FACE.get("pattern"):
        return sorted({pl_shard_report_of(553, v) for v in BATCHES[wildcards.batch]})
    return [GT_FACE_PATTERN.format(volume_id=v) for v in BATCHES[wildcards.batch]]


GT_TARGETS = expand(
    "results/gt/{batch}", batch=[b for b in BATCHES if gt_needs_batch(b)]
)
GT_DATASET_TARGETS = [
    f"{GT_NNUNET_RAW}/{t.dataset_name}/dataset.json"
    for t in GROUP_TRAINING.values()
    if training_volume_ids(t, VOLUMES)
]
GT_ANONYMIZE_TARGETS = expand(
    "results/anonymized/{batch}",
    batch=[
        b
        for b in BATCHES
        if SOURCES.get(gt_batch_source(b))
        and SOURCES[gt_batch_source(b)].anonymize_face
    ],
)


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
        "../envs/cads.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
        cpus_per_task=1,
    params:
        shape=GT_ATLAS.get("phantom_shape") or list(PHANTOM_SHAPE),
        spacing_mm=GT_ATLAS.get("phantom_spacing_mm") or PHANTOM_SPACING_MM,
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
    conda:
        "../envs/cads.yaml"
    threads: lambda wc: GT_REGISTRATION.get("threads", 2) if gt_is_atlas_batch(wc.batch) else 1
    resources:
        mem_mb=lambda wc, attempt: (8000 if gt_is_atlas_batch(wc.batch) else 4000)
        * 2 ** (attempt - 1),
        runtime=lambda wc: 5
        + (10 if gt_is_atlas_batch(wc.batch) else 1) * len(BATCHES[wc.batch]),
    params:
        volumes=lambda wc: BATCHES[wc.batch],
        source=lambda wc: SOURCES.get(gt_batch_source(wc.batch)),
        registration=GT_REGISTRATION,
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
        "../envs/cads.yaml"
    resources:
        mem_mb=2000,
        runtime=lambda wc: 10 + len(gt_training_ids(wc)) // 20,
        cpus_per_task=1,
    params:
        training=lambda wc: GROUP_TRAINING[int(wc.group)],
        candidates=lambda wc: [
            CandidateVolume(v, VOLUMES[v].source, standardized(v), gt_folder(v))
            for v in gt_training_ids(wc)
        ],
    script:
        "../workflow_scripts/entry/gt_dataset.py"


rule gt_anonymize_face:
    """Blur the faces of a batch of new hospital head CTs (Gaussian, sigma 5 voxels at 1.5 mm) inside the
    dilated face mask; results/anonymized/{batch}/{volume_id}/image.nii.gz."""
    input:
        standardized="results/standardized/{batch}",
        faces=gt_face_inputs,
    output:
        directory("results/anonymized/{batch}"),
    log:
        "logs/gt/anonymize/{batch}.log",
    benchmark:
        "benchmarks/gt/anonymize/{batch}.tsv"
    conda:
        "../envs/cads.yaml"
    resources:
        mem_mb=4000,
        runtime=lambda wc: 5 + len(BATCHES[wc.batch]),
        cpus_per_task=1,
    params:
        volumes=lambda wc: BATCHES[wc.batch],
        faces=lambda wc: [
            GT_FACE_PATTERN.format(volume_id=v) for v in BATCHES[wc.batch]
        ],
        face_value=GT_FACE_VALUE,
        sigma_voxels=GT_BLUR.get("sigma_voxels", FACE_BLUR_SIGMA_VOXELS),
        margin_voxels=GT_BLUR.get("margin_voxels", FACE_MARGIN_VOXELS),
    script:
        "../workflow_scripts/entry/gt_anonymize.py"
