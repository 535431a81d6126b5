# The CADS data factory: heterogeneous CT volumes in, complete whole-body labels and a final model out.
# Stage map and contracts: README.md. Each stage is one rules/*.smk file; each rule calls cadsflow.


from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# The defaults travel with the workflow; --configfile/--config on the command line override them.
configfile: Path(workflow.basedir) / "config" / "config.yaml"


validate(config, "config/schema.yaml")


report: "rules/report/workflow.rst"


# Aggregations over the whole cohort: seconds of work, not worth a cluster submission each.
localrules:
    all,
    quarantine_table,
    pseudolabel_status,
    gt_phantom_atlas,
    demo_cohort,
    shape_qc_exclude,
    dataset_card,
    rank_flavors,


include: "rules/common.smk"


shell.prefix(
    shell_prefix()
)  # strict bash, the workflow's code and interpreter (rules/common.smk)


include: "rules/standardize.smk"
include: "rules/gt.smk"
include: "rules/specialists.smk"
include: "rules/pseudolabel.smk"
include: "rules/shape_qc.smk"
include: "rules/flavors.smk"
include: "rules/flavor_predict.smk"
include: "rules/ranking.smk"
include: "rules/assembly.smk"
include: "rules/final.smk"
include: "rules/anonymize.smk"
include: "rules/evaluate.smk"
include: "rules/predict.smk"


rule all:
    """Everything the factory builds for the configured sheet."""
    input:
        "results/quarantine/quarantine.tsv",
        GT_TARGETS,
        GT_DATASET_TARGETS,
        GT_ANONYMIZE_TARGETS,
        "results/pseudolabels/status.tsv",
        SQ_TARGETS,
        FL_TARGETS,
        FP_TARGETS,
        RK_TARGETS,
        AS_TARGETS,
        FN_TARGETS,
        PREDICT_TARGETS,
        EV_REPORT_FILES.values(),
