"""Snakemake entry: the demo's deterministic phantom head atlas (CT-like image + group-557 labels)."""

from cadsflow.gt.atlas import write_phantom_atlas
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    write_phantom_atlas(
        snakemake.output.image, snakemake.output.labels, snakemake.params.shape, snakemake.params.spacing_mm  # noqa: F821
    )
