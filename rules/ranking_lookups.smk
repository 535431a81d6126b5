# Lookups of the ranking stage (rules/ranking.smk includes this file at its top).
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

RK_TARGETS = []
