"""Mutation check: apply known-bad edits to a scratch copy of the repository and show that the tests catch each one.

    .venv/bin/python tests/mutation/run_mutations.py              # every fast mutation in mutations.yaml
    .venv/bin/python tests/mutation/run_mutations.py --only ID ...  # some of them
    .venv/bin/python tests/mutation/run_mutations.py --slow       # also those that need a trained smoke model
    .venv/bin/python tests/mutation/run_mutations.py --ref HEAD   # copy a commit instead of the working tree

The repository (the working tree's tracked and untracked, not ignored, files; or a commit with --ref) is copied to a
scratch folder once. The unmutated copy must pass every listed test first (the baseline); then each mutation's edits
are applied, its tests run against the copy (pytest -x, PYTHONPATH and PATH pointing at the copy, so Snakemake and
`python -m cadsflow...` child processes see the mutated code too), and the files are put back. A mutation is CAUGHT
when pytest reports failures, MISSED when the tests pass, NOT APPLIED when its text is not in the file (the code moved
on: update mutations.yaml), ERROR for anything else. Exit status: 0 when every selected mutation was caught.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TABLE = Path(__file__).with_name("mutations.yaml")
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-rfE", "-m", "not cluster"]
PYTEST_TIMEOUT_S = 1800
CAUGHT, MISSED, NOT_APPLIED, ERROR = "CAUGHT", "MISSED", "NOT APPLIED", "ERROR"


@dataclass(frozen=True)
class Edit:
    file: str
    find: str
    replace: str


@dataclass(frozen=True)
class Mutation:
    id: str
    bug: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]
    slow: bool = False


@dataclass
class Outcome:
    mutation: Mutation
    result: str
    detail: str = ""
    seconds: float = 0.0
    failed_tests: list[str] = field(default_factory=list)
    output: str = ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutations")
    parser.add_argument("--slow", action="store_true", help="include mutations marked slow (trained smoke model)")
    parser.add_argument("--ref", help="copy this git commit instead of the working tree")
    parser.add_argument("--table", type=Path, default=TABLE, help="the mutations table (YAML)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy and print its path")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the unmutated tests first")
    parser.add_argument("--show-failures", action="store_true", help="print pytest's failure report of each mutation")
    args = parser.parse_args(argv)

    mutations = select(load_mutations(args.table), args.only, args.slow)
    scratch = Path(tempfile.mkdtemp(prefix="cads-mutations-"))
    try:
        copy_repository(REPO, scratch, args.ref)
        check_imports_from(scratch)
        if not args.skip_baseline:
            tests = sorted({t for m in mutations for t in m.tests})
            code, output, seconds = run_tests(scratch, tests)
            print(f"baseline (unmutated copy): {len(tests)} test targets, pytest exit {code}, {seconds:.0f} s")
            if code != 0:
                print(output[-6000:])
                print("baseline fails: fix the tests or the code before judging mutations", file=sys.stderr)
                return 2
        outcomes = []
        for mutation in mutations:
            outcome = run_mutation(scratch, mutation)
            outcomes.append(outcome)
            print(format_line(outcome), flush=True)
            if args.show_failures and outcome.output:
                print(_failure_report(outcome.output), flush=True)
        print_summary(outcomes)
        return 0 if all(o.result == CAUGHT for o in outcomes) else 1
    finally:
        if args.keep:
            print(f"scratch copy kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def load_mutations(path: Path) -> list[Mutation]:
    spec = yaml.safe_load(Path(path).read_text())
    mutations = []
    for entry in spec["mutations"]:
        edits = tuple(Edit(e["file"], e["find"], e["replace"]) for e in entry["edits"])
        mutations.append(Mutation(entry["id"], entry["bug"], edits, tuple(entry["tests"]), bool(entry.get("slow"))))
    ids = [m.id for m in mutations]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SystemExit(f"{path}: mutation ids used twice: {duplicates}")
    return mutations


def select(mutations: list[Mutation], only, slow: bool) -> list[Mutation]:
    if only:
        unknown = sorted(set(only) - {m.id for m in mutations})
        if unknown:
            raise SystemExit(f"unknown mutation ids {unknown}; known: {[m.id for m in mutations]}")
        return [m for m in mutations if m.id in only]
    return [m for m in mutations if slow or not m.slow]


def copy_repository(repo: Path, scratch: Path, ref: str | None) -> None:
    """The files git knows about (or a commit's tree) under `scratch`; no .venv, results or other ignored files."""
    if ref:
        archive = subprocess.run(["git", "-C", str(repo), "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
        return
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = repo / name
        if source.is_file():  # deleted in the working tree but still in the index: skip
            target = scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def check_imports_from(scratch: Path) -> None:
    """The copy's cadsflow, not the editable install's, must be what tests and child processes import."""
    probe = subprocess.run([sys.executable, "-c", "import cadsflow; print(cadsflow.__file__)"], env=_env(scratch),
                           cwd=scratch, capture_output=True, text=True, check=True)
    location = Path(probe.stdout.strip()).resolve()
    if scratch.resolve() not in location.parents:
        raise SystemExit(f"cadsflow imports from {location}, not from the scratch copy {scratch}")


def run_mutation(scratch: Path, mutation: Mutation) -> Outcome:
    originals: dict[Path, str] = {}
    try:
        for edit in mutation.edits:
            path = scratch / edit.file
            text = path.read_text() if path.is_file() else ""
            originals.setdefault(path, text)
            count = text.count(edit.find)
            if count != 1:
                where = "not found" if count == 0 else f"found {count} times"
                return Outcome(mutation, NOT_APPLIED, f"{edit.file}: text {where}: {edit.find.strip()[:70]!r}")
            path.write_text(text.replace(edit.find, edit.replace))
        code, output, seconds = run_tests(scratch, list(mutation.tests))
    finally:
        for path, text in originals.items():
            path.write_text(text)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.M)
    if code == 1:
        return Outcome(mutation, CAUGHT, failed[0] if failed else "tests failed", seconds, failed, output)
    if code == 0:
        return Outcome(mutation, MISSED, "every listed test passed", seconds, output=output)
    return Outcome(mutation, ERROR, f"pytest exit {code}: {output.strip().splitlines()[-1:] or ['']}", seconds,
                   output=output)


def _failure_report(output: str, max_lines: int = 25) -> str:
    """The assertion lines of pytest's report (lines starting with E), indented under the mutation's line."""
    lines = [line for line in output.splitlines() if line.startswith("E ")][:max_lines]
    return "\n".join(f"    | {line}" for line in lines)


def run_tests(scratch: Path, tests: list[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", *tests, *PYTEST_ARGS], cwd=scratch, env=_env(scratch),
                          capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def _env(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(scratch / "workflow_scripts"), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def format_line(outcome: Outcome) -> str:
    return f"{outcome.result:<12} {outcome.mutation.id:<48} {outcome.seconds:6.1f} s  {outcome.detail}"


def print_summary(outcomes: list[Outcome]) -> None:
    counts = {r: sum(o.result == r for o in outcomes) for r in (CAUGHT, MISSED, NOT_APPLIED, ERROR)}
    print(f"\n{len(outcomes)} mutations: " + ", ".join(f"{n} {r.lower()}" for r, n in counts.items()))
    for outcome in outcomes:
        if outcome.result != CAUGHT:
            print(f"  {outcome.result}: {outcome.mutation.id}: {outcome.mutation.bug}")


if __name__ == "__main__":
    sys.exit(main())
