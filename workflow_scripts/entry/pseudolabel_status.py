import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821  the workflow's cadsflow, installed or not

from cadsflow.logs import to_log
from cadsflow.pseudolabel.infer import write_status_table

with to_log(snakemake.log[0]):
    write_status_table(snakemake.input.reports, snakemake.output.status)
