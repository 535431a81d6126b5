"""Snakemake entry: rule demo_cohort (the embedded phantom cohort; cadsflow.demo)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.demo import build_demo_cohort
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):
    # the first output is the cohort's registry.yaml, at the top of the cohort folder (cadsflow.demo)
    build_demo_cohort(Path(snakemake.output[0]).parent, snakemake.input.spec)
