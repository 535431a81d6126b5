# Lookups of the predict stage (rules/predict.smk includes this file at its top): the sheet of new CTs, its
# batches and the models they need. Parse-time code: one TSV read, no file scans.

from cadsflow.predict.models import parse_groups, required_groups
from cadsflow.predict.sheet import predict_batches, read_predict_sheet

PR = config["predict"]


def _predict_volumes():
    if not PR["sheet"]:
        return {}
    try:
        return read_predict_sheet(PR["sheet"])
    except SheetError as exc:
        raise WorkflowError(str(exc)) from None


PR_VOLUMES = _predict_volumes()
PR_BATCHES = predict_batches(PR_VOLUMES, PR["volumes_per_batch"])
PR_GROUPS = required_groups(parse_groups(",".join(map(str, PR["groups"]))))


def pr_model_inputs(wildcards):
    """The models' markers, when they are this run's: its final models (cads-predict takes a group's final model
    over its specialist, cadsflow.predict.models), so the DAG trains them first."""
    if Path(PR["models"]).resolve() != Path("results").resolve():
        return []
    return [fn_model_marker(g) for g in PR_GROUPS if g in FN_GROUPS]


def pr_batch_volumes(batch):
    return [dict(volume_id=v, image=PR_VOLUMES[v]) for v in PR_BATCHES[batch]]


PREDICT_TARGETS = [f"results/predict/{batch}.tsv" for batch in PR_BATCHES]
