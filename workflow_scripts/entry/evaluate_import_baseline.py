from cadsflow.evaluation.baseline import import_baseline, load_baseline_mapping
from cadsflow.labels import load_label_space
from cadsflow.logs import to_log

with to_log(snakemake.log[0]):
    space = load_label_space(snakemake.params.label_space)
    mapping = load_baseline_mapping(snakemake.params.mapping, space)
    import_baseline(snakemake.input.baseline, snakemake.output.unified, mapping, space)
