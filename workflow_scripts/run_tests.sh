#!/usr/bin/env bash
# The test suite: unit tests, the end-to-end demo DAG and (as root, where Debian's SLURM can be installed)
# the cluster tests against a real single-node SLURM on localhost. Extra arguments go to pytest.
# Exits non-zero, before pytest, when that SLURM cannot be brought up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash workflow_scripts/setup_env.sh
# Where SLURM can be installed (root, apt-get) the cluster tests must run: a cluster that does not come up fails
# the run instead of letting every cluster test skip. CADS_SKIP_SLURM=1 says so explicitly (a local run without
# network, say); the cluster tests then skip.
if [ "${CADS_SKIP_SLURM:-0}" = 1 ]; then
  echo "run_tests: CADS_SKIP_SLURM=1: no local SLURM; cluster tests will skip" >&2
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! SLURM_CI_ACCOUNTING=dbd bash tests/cluster/slurm-up.sh; then
    echo "run_tests: local SLURM did not come up (tests/cluster/slurm-up.sh failed above); as root with apt-get" \
      "the cluster tests must run, so the test run fails (CADS_SKIP_SLURM=1 skips them on purpose)" >&2
    exit 1
  fi
  export CADS_REQUIRE_SLURM=1  # it is up: a cluster test that finds no cluster now fails instead of skipping
fi
# dciodvfy (Debian's dicom3tools) validates cads-predict's DICOM-SEG; without it that one check skips with a reason
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v dciodvfy >/dev/null; then
  apt-get install -y -q dicom3tools >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dicom3tools >/dev/null 2>&1) \
    || echo "run_tests: dicom3tools not installed; the dciodvfy check will skip" >&2
fi
exec .venv/bin/python -m pytest "$@"
