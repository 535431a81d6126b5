#!/usr/bin/env bash
# CI: the pinned pip requirements of each conda env (envs/*.yaml) resolve together against the package index.
# pip's resolver runs in a throwaway venv with --dry-run --ignore-installed: it fetches metadata, installs nothing.
# Usage: .ci/check_envs.sh [ENV.yaml ...] (default envs/*.yaml). One line per env; exit 1 if any env does not
# resolve. Needs the network (PyPI) and a Python of the envs' version (PYTHON=..., default python3).
# Where /etc/xdg/pip exists (this build machine), pip's global config caps torch at the release on local disk.
# That the envs pin the tested venv's versions and cover their code's imports is tests/test_envs.py's job.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
py="$work/venv/bin/python"
# a current resolver is faster (PyPI's metadata files, not whole wheels); PyYAML reads the env files
"$py" -m pip install --quiet --upgrade pip pyyaml > "$work/pip.log" 2>&1 || {
  echo "FAILED: could not set up the throwaway venv:"; tail -n 20 "$work/pip.log"; exit 1; }
status=0
envs=("$@")
[ ${#envs[@]} -gt 0 ] || envs=(envs/*.yaml)
for env in "${envs[@]}"; do
  # prints the env's python version (first line, may be empty), then its pip requirements; nothing if not an env
  "$py" - "$env" > "$work/env.txt" <<'PY'
import sys, yaml
data = yaml.safe_load(open(sys.argv[1]))
deps = data.get("dependencies", []) if isinstance(data, dict) else []
pip = [line for d in deps if isinstance(d, dict) for line in d.get("pip", [])]
if pip:
    print(next((str(d).split("=", 1)[1] for d in deps if str(d).startswith("python=")), ""))
    print("\n".join(pip))
PY
  [ -s "$work/env.txt" ] || continue  # not an env (envs/families.yaml)
  want=$(head -n 1 "$work/env.txt")
  tail -n +2 "$work/env.txt" > "$work/requirements.txt"
  pins=$(grep -c . "$work/requirements.txt")
  have=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  if [ -n "$want" ] && [ "$want" != "$have" ]; then
    echo "$env: FAILED: needs Python $want, $PY is $have (set PYTHON=python$want)"; status=1; continue
  fi
  start=$SECONDS
  if "$py" -m pip install --dry-run --ignore-installed --report "$work/report.json" \
       -r "$work/requirements.txt" > "$work/pip.log" 2>&1; then
    n=$("$py" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["install"]))' "$work/report.json")
    echo "$env: $pins pins resolve together ($n packages with dependencies) in $((SECONDS - start)) s"
  else
    echo "$env: FAILED: its $pins pins do not resolve ($((SECONDS - start)) s); pip says:"
    { grep -q '^ERROR' "$work/pip.log" && sed -n '/^ERROR/,$p' "$work/pip.log" || tail -n 20 "$work/pip.log"; } |
      sed 's/^/    /'
    status=1
  fi
done
exit $status
