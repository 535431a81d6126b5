"""Snakemake entry: one group's training volumes -> an nnU-Net v2 raw dataset folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.gt.nnunet_dataset import write_group_dataset
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    write_group_dataset(
        snakemake.params.training,  # noqa: F821
        snakemake.params.candidates,  # noqa: F821
        Path(snakemake.output.dataset_json).parent,  # noqa: F821
    )
