# Lookups of the standardize stage (rules/standardize.smk includes this file at its top): which files a batch reads and the label values its sources know.
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).


def batch_inputs(wildcards):
    """Images and labels of a batch that exist: a missing file becomes a quarantine line, not a DAG failure."""
    paths = []
    for vol in batch_volumes(wildcards.batch):
        paths += [
            p
            for p in (vol.image, vol.label)
            if p and (p in DEMO_FILE_SET or _readable(p))
        ]
    return paths


def _readable(path):
    """Exists and can be opened: an unreadable input would fail Snakemake's own bookkeeping, not quarantine."""
    return Path(path).exists() and os.access(path, os.R_OK)


def known_label_values(batch):
    """Per volume of the batch: the label values its source's mapping knows (None without a registry)."""
    values = {}
    for vol in batch_volumes(batch):
        source = SOURCES.get(vol.source)
        values[vol.volume_id] = sorted(source.known_values()) if source else None
    return values
