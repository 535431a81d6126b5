"""Snakemake entry: rule predict_batch (thin; the logic is cadsflow.predict.pipeline.predict_batch).

One job segments a batch of new CTs with one load per model; a refused or failing volume is a line of the report,
not a failed job.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.logs import to_log
from cadsflow.predict.pipeline import predict_batch, settings_from_config
from cadsflow.specialists.nnunet import TRAINERS_DIR

if __name__ == "__main__":
    with to_log(snakemake.log[0]):  # noqa: F821
        import torch

        torch.set_num_threads(max(1, int(snakemake.threads)))  # noqa: F821
        os.environ.setdefault("nnUNet_extTrainer", str(TRAINERS_DIR))  # the trainers the checkpoints name
        predict_batch(
            [(v["volume_id"], v["image"]) for v in snakemake.params.volumes],  # noqa: F821
            snakemake.output.folder,  # noqa: F821
            snakemake.params.models,  # noqa: F821
            settings_from_config(snakemake.params.settings, snakemake.params.standardize),  # noqa: F821
            snakemake.output.report,  # noqa: F821
        )
