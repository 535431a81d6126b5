#!/usr/bin/env bash
# The main job: the whole factory on the embedded phantom demo cohort, on this machine's CPUs.
# Extra arguments go to snakemake (e.g. -n for a dry run, --until standardize).
set -euo pipefail
cd "$(dirname "$0")/.."
bash workflow_scripts/setup_env.sh
exec .venv/bin/snakemake --profile profiles/local "$@"
