# Lookups of the shape_qc stage (rules/shape_qc.smk includes this file at its top): the preset, the ground-truth
# maps a group's prior learns from, and the shards it scores. Parse-time code: dictionary lookups, no file scans.

from cadsflow.shape_qc.presets import load_preset as load_shape_qc_preset

SQ = config["shape_qc"]
# the run's preset picks the shape-QC preset unless the config names one (smoke -> demo, paper -> paper)
SQ_PRESET_NAME = SQ["preset"] or ("paper" if config["preset"] == "paper" else "demo")
SQ_CONFIG = project_path(SQ["config"])
SQ_PRESET = load_shape_qc_preset(SQ_PRESET_NAME, SQ_CONFIG)
SQ_DIR = "results/shape_qc"
SQ_ARGS = f"--preset {SQ_PRESET_NAME} --config {shlex.quote(str(SQ_CONFIG))}"
SQ_TORCH_ARGS = (
    f"{SQ_ARGS} --seed {SQ['seed']}"  # the steps that sample points and fit codes
)


def sq_training_ids(group):
    """The ground truth a group's prior learns from: the volumes its specialist trained on, whose sources annotate
    the group completely (config/group_training.yaml; Online Methods 2.2: fully annotated datasets only).
    """
    return sorted(training_volume_ids(GROUP_TRAINING[int(group)], VOLUMES))


def sq_training_maps(wc):
    return [
        f"{gt_folder(v)}/group_{wc.group}.nii.gz" for v in sq_training_ids(wc.group)
    ]


def sq_training_batches(wc):
    return sorted({f"results/gt/{BATCH_OF[v]}" for v in sq_training_ids(wc.group)})


# One scoring job reads several pseudo-label shards: 22,022 volumes make 9 x 111 pseudo-label shards but only
# 9 x ceil(111 / shards_per_job) scoring jobs (a reconstruction costs less than a prediction).
SQ_SHARDS_PER_JOB = SQ["shards_per_job"]
SQ_PARTS = list(range(-(-len(pl_shards()) // SQ_SHARDS_PER_JOB)))


def sq_part_shards(part):
    """The pseudo-label shard indices one scoring job covers."""
    k = int(part) * SQ_SHARDS_PER_JOB
    return pl_shards()[k : k + SQ_SHARDS_PER_JOB]


def sq_shard_table(group, part):
    return f"{SQ_DIR}/{group}/part_{part}.tsv"


def sq_resources(runtime_min):
    """A shape-QC job's scheduler resources (grow with each retry); a GPU only where the preset runs on one."""
    resources = {
        "mem_mb": lambda wc, attempt: 8000 * attempt,
        "runtime": lambda wc, attempt: runtime_min * attempt,
    }
    if SQ_PRESET.device == "cuda":
        resources["gpu"] = 1
    return resources


SQ_TARGETS = [
    f"{SQ_DIR}/{g}/{name}"
    for g in SP_GROUPS
    if sq_training_ids(g)
    for name in ("excluded.tsv", "gallery.png")
]
