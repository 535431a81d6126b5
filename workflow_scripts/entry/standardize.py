"""Snakemake entry: rule standardize (thin; the logic is cadsflow.standardize)."""

from cadsflow.logs import to_log
from cadsflow.standardize import settings_from_config, standardize_volume

with to_log(snakemake.log[0]):
    vol = snakemake.params.volume
    known = snakemake.params.known_values
    standardize_volume(
        vol.volume_id,
        vol.image,
        vol.label,
        snakemake.output[0],
        known_label_values=set(known) if known is not None else None,
        settings=settings_from_config(snakemake.params.settings),
        extra_record={"source": vol.source, "split": vol.split},
    )
