from cadsflow.logs import to_log
from cadsflow.pseudolabel.infer import write_status_table

with to_log(snakemake.log[0]):
    write_status_table(snakemake.input.reports, snakemake.output.status)
