"""Snakemake entry: rule quarantine_table."""

from cadsflow.logs import to_log
from cadsflow.standardize import write_quarantine_table

with to_log(snakemake.log[0]):
    write_quarantine_table(snakemake.input, snakemake.output.quarantine, snakemake.output.status)
