# Lookups of the flavors stage (rules/flavors.smk includes this file at its top).
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

FL_TARGETS = []
