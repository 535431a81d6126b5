#!/usr/bin/env bash
# The main job: the whole factory on the embedded phantom demo cohort, on this machine's CPUs.
# Extra arguments go to snakemake (e.g. -n for a dry run, --until standardize).
set -euo pipefail
cd "$(dirname "$0")/.."
bash workflow_scripts/setup_env.sh
# Rules call `python -m cadsflow...`: the venv must be first on PATH, as an activated environment would be.
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/snakemake --profile profiles/local "$@"
