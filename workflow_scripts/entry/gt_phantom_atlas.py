"""Snakemake entry: the demo's deterministic phantom head atlas (CT-like image + group-557 labels)."""

from cadsflow.gt.atlas import write_phantom_atlas
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    write_phantom_atlas(
        snakemake.output.image,  # noqa: F821
        snakemake.output.labels,  # noqa: F821
        snakemake.params.shape,  # noqa: F821
        snakemake.params.spacing_mm,  # noqa: F821
    )
