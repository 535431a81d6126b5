"""Snakemake entry: rule gt_batch (thin; the logic is cadsflow.gt.volume)."""

from cadsflow.gt.atlas import RegistrationSettings, load_atlas
from cadsflow.gt.volume import prepare_batch_gt
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    atlas_image = snakemake.input.get("atlas_image")  # noqa: F821
    settings = {**snakemake.params.registration, "threads": snakemake.threads}  # noqa: F821
    prepare_batch_gt(
        snakemake.params.volumes,  # noqa: F821
        snakemake.params.source,  # noqa: F821
        snakemake.input.standardized,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        atlas=load_atlas(atlas_image, snakemake.input.atlas_labels) if atlas_image else None,  # noqa: F821
        registration=RegistrationSettings(**settings),
    )
