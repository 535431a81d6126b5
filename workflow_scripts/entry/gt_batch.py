"""Snakemake entry: rule gt_batch (thin; the logic is cadsflow.gt.volume)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

# ANTs (atlas registration) has no thread argument: ITK reads its process-wide default once, when it starts.
# This script is the job's own process, so set it here from the rule's threads, before anything imports ants.
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(snakemake.threads)  # noqa: F821 (injected by Snakemake)

from cadsflow.gt.atlas import RegistrationSettings, load_atlas  # noqa: E402
from cadsflow.gt.volume import prepare_batch_gt  # noqa: E402
from cadsflow.logs import to_log  # noqa: E402

with to_log(snakemake.log[0]):  # noqa: F821
    atlas_image = snakemake.input.get("atlas_image")  # noqa: F821
    prepare_batch_gt(
        snakemake.params.volumes,  # noqa: F821
        snakemake.params.source,  # noqa: F821
        snakemake.input.standardized,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        atlas=load_atlas(atlas_image, snakemake.input.atlas_labels) if atlas_image else None,  # noqa: F821
        registration=RegistrationSettings(**snakemake.params.registration),  # noqa: F821
        sparse_labels=snakemake.params.sparse_labels,  # noqa: F821
    )
