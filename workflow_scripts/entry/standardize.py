"""Snakemake entry: rule standardize (thin; the logic is cadsflow.standardize)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.logs import to_log
from cadsflow.standardize import settings_from_config, standardize_batch

with to_log(snakemake.log[0]):
    standardize_batch(
        snakemake.params.volumes,
        snakemake.output[0],
        snakemake.params.known_values,
        settings_from_config(snakemake.params.settings),
    )
