"""Snakemake entry: rule gt_anonymize_face (thin; the logic is cadsflow.gt.anonymize)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.gt.anonymize import anonymize_batch
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    anonymize_batch(
        snakemake.params.volumes,  # noqa: F821
        snakemake.input.standardized,  # noqa: F821
        snakemake.params.faces,  # noqa: F821
        snakemake.params.face_value,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        snakemake.params.sigma_voxels,  # noqa: F821
        snakemake.params.margin_voxels,  # noqa: F821
    )
