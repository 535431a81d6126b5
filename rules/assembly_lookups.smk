# Lookups of the assembly stage (rules/assembly.smk includes this file at its top).
# Parse-time code: cheap at 22,022 volumes (dictionary lookups, no file scans).

AS_TARGETS = []
