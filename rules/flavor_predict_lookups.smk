# Lookups of the flavor_predict stage (rules/flavor_predict.smk includes this file at its top).
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

FP_TARGETS = []
