#!/usr/bin/env bash
# The test suite: unit tests, the end-to-end demo DAG and (as root, where Debian's SLURM can be installed)
# the cluster tests against a real single-node SLURM on localhost. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash workflow_scripts/setup_env.sh
# Rules call `python -m cadsflow...`: the venv must be first on PATH, as an activated environment would be.
export PATH="$PWD/.venv/bin:$PATH"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  SLURM_CI_ACCOUNTING=dbd bash tests/cluster/slurm-up.sh || echo "run_tests: local SLURM did not come up; cluster tests will skip" >&2
fi
exec .venv/bin/python -m pytest "$@"
