import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.evaluation.report import REPORT_OUTPUTS, build_report
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):
    build_report(
        snakemake.input.scores,
        {name: snakemake.output[name] for name in REPORT_OUTPUTS},
        n_boot=snakemake.params.bootstrap_samples,
        seed=snakemake.params.seed,
        correction=snakemake.params.correction,
        alpha=snakemake.params.alpha,
        others=snakemake.params.others,
    )
