"""Snakemake entry: rule quarantine_table."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.logs import to_log
from cadsflow.standardize import write_quarantine_table

with to_log(snakemake.log[0]):
    write_quarantine_table(snakemake.input, snakemake.output.quarantine, snakemake.output.status)
