# Lookups of the anonymize stage (rules/anonymize.smk includes this file at its top): the face masks.

GT_FACE_PATTERN = GT["face_mask"]["pattern"]  # empty: group 553's pseudo-label `face`
GT_FACE_VALUE = GT["face_mask"]["value"] or LABEL_SPACE.group_label_map(553)["face"]


def gt_face_map(volume_id):
    """A volume's face mask: the configured pattern's file, or its group 553 pseudo-label in its shard's folder."""
    if GT_FACE_PATTERN:
        return GT_FACE_PATTERN.format(volume_id=volume_id)
    return pl_label_map(553, volume_id)


def gt_face_inputs(wildcards):
    """What the face masks of a batch wait for: group 553's shard folders when they are pseudo-labels."""
    if not GT_FACE_PATTERN:
        return sorted({pl_shard_dir_of(553, v) for v in BATCHES[wildcards.batch]})
    return [gt_face_map(v) for v in BATCHES[wildcards.batch]]


GT_ANONYMIZE_TARGETS = expand(
    "results/anonymized/{batch}",
    batch=[
        b
        for b in BATCHES
        if SOURCES.get(gt_batch_source(b))
        and SOURCES[gt_batch_source(b)].anonymize_face
    ],
)
