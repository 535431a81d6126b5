# Lookups of the anonymize stage (rules/anonymize.smk includes this file at its top): the face masks.

GT_FACE_PATTERN = GT["face_mask"]["pattern"] or pl_label_map(553, "{volume_id}")
GT_FACE_VALUE = GT["face_mask"]["value"] or LABEL_SPACE.group_label_map(553)["face"]


def gt_face_inputs(wildcards):
    """What the face masks of a batch wait for: group 553's shard reports when they are pseudo-labels."""
    if not GT["face_mask"]["pattern"]:
        return sorted({pl_shard_report_of(553, v) for v in BATCHES[wildcards.batch]})
    return [GT_FACE_PATTERN.format(volume_id=v) for v in BATCHES[wildcards.batch]]


GT_ANONYMIZE_TARGETS = expand(
    "results/anonymized/{batch}",
    batch=[
        b
        for b in BATCHES
        if SOURCES.get(gt_batch_source(b))
        and SOURCES[gt_batch_source(b)].anonymize_face
    ],
)
