import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.evaluation.evaluate import cohort_reference_volumes
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):
    cohort_reference_volumes(
        list(zip(snakemake.params.references, snakemake.params.sources)),
        snakemake.output.table,
        alignment_path=snakemake.params.alignment,
        registry_path=snakemake.params.registry,
        statistic=snakemake.params.statistic,
        label_space_path=snakemake.params.label_space,
    )
