from cadsflow.evaluation.evaluate import run_volume
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):
    run_volume(
        snakemake.wildcards.volume_id,
        snakemake.params.source,
        snakemake.input.reference,
        snakemake.input.prediction,
        snakemake.output.scores,
        alignment_path=snakemake.params.alignment,
        registry_path=snakemake.params.registry,
        reference_volumes_path=snakemake.input.reference_volumes,
        baseline=snakemake.input.baseline[0] if snakemake.input.baseline else None,
        baseline_mapping_path=snakemake.params.baseline_mapping,
        tolerance_mm=snakemake.params.tolerance_mm,
        label_space_path=snakemake.params.label_space,
    )
