# Lookups of the standardize stage (rules/standardize.smk includes this file at its top): which files a batch reads and the label values its sources know.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).


def batch_inputs(wildcards):
    """Images and label files (main and extra sets) of a batch that exist: a missing file becomes a quarantine
    line, not a DAG failure."""
    paths = []
    for vol in batch_volumes(wildcards.batch):
        paths += [
            p
            for p in (vol.image, vol.label, *vol.extra_labels.values())
            if p and (p in DEMO_FILE_SET or _readable(p))
        ]
    return paths


def _readable(path):
    """Exists and can be opened: an unreadable input would fail Snakemake's own bookkeeping, not quarantine."""
    return Path(path).exists() and os.access(path, os.R_OK)


def known_label_values(batch):
    """Per volume of the batch: the label values its source's mapping knows (None without a registry); for a
    volume with extra label files, the values of each of its source's label sets ({"main": ..., <set>: ...}).
    Volumes without extra labels keep the plain list, so their params (and Snakemake's rerun check) are as before.
    """
    values = {}
    for vol in batch_volumes(batch):
        source = SOURCES.get(vol.source)
        if not source:
            values[vol.volume_id] = None
        elif vol.extra_labels:
            values[vol.volume_id] = {
                "main": sorted(source.known_values()),
                **{s: sorted(v) for s, v in source.extra_known_values().items()},
            }
        else:
            values[vol.volume_id] = sorted(source.known_values())
    return values
