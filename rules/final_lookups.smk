# Lookups of the final stage (rules/final.smk includes this file at its top).
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

FN_TARGETS = []
