"""Snakemake entry: rule final_dataset (thin; the logic is cadsflow.final.dataset and cadsflow.specialists.train).

One process per job: the group's training volumes, label counts, oversampling table and nnU-Net raw dataset, then
nnU-Net's fingerprint, plans and preprocessing with the final preset, in this process. The work runs under the
__main__ guard: nnU-Net's pooled preprocessing (paper preset) spawns workers that re-import this script.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.logs import to_log

if __name__ == "__main__":
    with to_log(snakemake.log[0]):  # noqa: F821
        import torch

        from cadsflow.final.config import final_preset_for_group
        from cadsflow.final.dataset import FinalCandidate, prepare_training_data
        from cadsflow.specialists.nnunet import NnunetDirs, nnunet_env
        from cadsflow.specialists.train import plan_specialist

        params, inputs, output = snakemake.params, snakemake.input, snakemake.output  # noqa: F821
        group = int(snakemake.wildcards.group)  # noqa: F821
        torch.set_num_threads(max(1, int(snakemake.threads)))  # noqa: F821
        preset = final_preset_for_group(params.preset, group, inputs.final_config)
        dataset_dir = Path(output.dataset_json).parent  # <nnUNet_raw>/Dataset<G>_<Name>
        dirs = NnunetDirs(dataset_dir.parent, Path(output.planned).parent, Path(params.nnunet_results))
        # nnU-Net reads its folders from the environment when it is imported: set them for this process first
        os.environ.update(nnunet_env(dirs, base={}))
        prepare_training_data(group, [FinalCandidate(**c) for c in params.candidates], inputs.provenance,
                              dataset_dir, output.counts, output.table, inputs.final_config, preset=preset.name)
        plan_specialist(group, dataset_dir, preset, dirs, output.planned, snakemake.log[0])  # noqa: F821
