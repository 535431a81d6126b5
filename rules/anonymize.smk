# Stage: anonymize (Online Methods 1.2). Faces of new hospital head CTs are blurred inside the face mask, which by
# default is group 553's pseudo-label `face`, so this runs after pseudo-labeling. Per batch of an anonymized source.


include: "anonymize_lookups.smk"


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
        "../envs/imaging.yaml"
    resources:
        mem_mb=4000,
        runtime=lambda wc, attempt: (5 + len(BATCHES[wc.batch])) * attempt,
    params:
        volumes=lambda wc: BATCHES[wc.batch],
        faces=lambda wc: [gt_face_map(v) for v in BATCHES[wc.batch]],
        face_value=GT_FACE_VALUE,
        sigma_voxels=config["gt"]["face_blur"]["sigma_voxels"],
        margin_voxels=config["gt"]["face_blur"]["margin_voxels"],
    script:
        "../workflow_scripts/entry/gt_anonymize.py"
