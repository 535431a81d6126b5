#!/usr/bin/env bash
# CI: the pinned pip requirements of each conda env (envs/*.yaml) resolve together against the package index.
# pip's resolver runs in a throwaway venv with --dry-run --ignore-installed: it fetches metadata, installs nothing.
# Usage: .ci/check_envs.sh [ENV.yaml ...] (default envs/*.yaml). One line per env; exit 1 if any env does not resolve. Needs the network (PyPI) and a Python of the envs' version.
# Where /etc/xdg/pip exists (this build machine), pip's global config caps torch at the release on local disk.
# That the envs pin the tested venv's versions and cover their code's imports is tests/test_envs.py's job.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip)
have=$("$work/venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
status=0
envs=("$@")
[ ${#envs[@]} -gt 0 ] || envs=(envs/*.yaml)
for env in "${envs[@]}"; do
  # the `- pip:` list of a conda env file: its deeper-indented `- ` items
  awk '/^[[:space:]]*- pip:[[:space:]]*$/ {inpip=1; ind=index($0, "-"); next}
       inpip && match($0, /^[[:space:]]*- /) && RLENGTH > ind + 1 {sub(/^[[:space:]]*- /, ""); sub(/[[:space:]]+#.*$/, ""); print; next}
       inpip && NF && $0 !~ /^[[:space:]]*#/ {inpip=0}' "$env" > "$work/requirements.txt"
  pins=$(grep -c . "$work/requirements.txt" || true)
  [ "$pins" -gt 0 ] || continue  # not an env (envs/families.yaml)
  want=$(sed -n 's/^[[:space:]]*- python=\([0-9.]*\)[[:space:]]*$/\1/p' "$env")
  if [ -n "$want" ] && [ "$want" != "$have" ]; then
    echo "$env: FAILED: needs Python $want, $PY is $have (set PYTHON=python$want)"; status=1; continue
  fi
  start=$SECONDS
  if "${pip[@]}" install --dry-run --ignore-installed --quiet --report "$work/report.json" \
       -r "$work/requirements.txt" > "$work/pip.log" 2>&1; then
    n=$("$work/venv/bin/python" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["install"]))' "$work/report.json")
    echo "$env: $pins pins resolve together ($n packages with dependencies) in $((SECONDS - start)) s"
  else
    echo "$env: FAILED: its $pins pins do not resolve ($((SECONDS - start)) s); pip says:"
    grep -v '^WARNING: Location' "$work/pip.log" | tail -n 20 | sed 's/^/    /'
    status=1
  fi
done
exit $status
