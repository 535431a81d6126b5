"""Snakemake entry: rule gt_phantom_atlas (the demo's phantom brain atlas; cadsflow.demo)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.demo import write_demo_atlas
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):
    write_demo_atlas(snakemake.output.image, snakemake.output.labels, snakemake.params.seed)
