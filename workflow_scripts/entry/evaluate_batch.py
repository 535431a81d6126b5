import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.evaluation.evaluate import VolumeToScore, run_batch
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):
    run_batch(
        [VolumeToScore(**v) for v in snakemake.params.volumes],
        snakemake.output.scores,
        alignment_path=snakemake.params.alignment,
        registry_path=snakemake.params.registry,
        reference_volumes_path=snakemake.input.reference_volumes,
        baseline_mapping_path=snakemake.params.baseline_mapping,
        tolerance_mm=snakemake.params.tolerance_mm,
        label_space_path=snakemake.params.label_space,
        false_negative_rule=snakemake.params.false_negative_rule,
    )
