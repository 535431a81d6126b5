"""cadsflow: the CADS data factory as a library; Snakemake rules call it through thin entry scripts."""

__version__ = "0.1.0"
