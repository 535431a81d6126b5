"""The per-tool-family conda environments (envs/*.yaml) and the code each one serves (issue 17, items 1 and 2).

Checks without network: every env pins exactly the versions of the tested venv, installs no snakemake and no local
path (Snakemake copies an env file into its conda prefix, so `-e ..` would not be the repository); every rule's
`conda:` (read from the rules files, whatever they say now) names the env that envs/families.yaml lists for the code
the rule runs; and that code, with every cadsflow module it imports (lazy imports inside functions too), imports no
third-party module its env does not install. Entry scripts find the cadsflow package from the workflow folder: one
test runs a real entry script through Snakemake in an interpreter where cadsflow is not installed.
Whether the pins resolve together against PyPI is .ci/check_envs.sh's job (it needs the network).
"""

from __future__ import annotations

import ast
import functools
import json
import re
import subprocess
import sys
import sysconfig
import textwrap
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions, version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
CODE = ROOT / "workflow_scripts"  # the folder the entry scripts' bootstrap puts on sys.path
ENTRY = CODE / "entry"
FAMILIES = ENVS / "families.yaml"
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
# conda installs only the interpreter and pip; every package comes from pip, the same wheels the venv was tested with
CONDA_ALLOWED = {"python", "pip"}
# Snakemake runs outside the job's env and lends it its own modules; an env that installs it shadows that copy
FORBIDDEN = re.compile(r"^snakemake($|-)")
# The first statement of every entry script before it imports cadsflow (Snakemake's preamble defines `snakemake`)
BOOTSTRAP = "sys.path.insert(0, str(Path(snakemake.scriptdir).parent))"


# --- env files ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvFile:
    name: str  # file name, e.g. "nnunet.yaml"
    conda: tuple[str, ...]  # conda specs, e.g. "python=3.11"
    pip: tuple[str, ...]  # pip requirement lines


def read_env(path: Path) -> EnvFile:
    data = yaml.safe_load(path.read_text())
    conda, pip = [], []
    for dep in data.get("dependencies", []):
        if isinstance(dep, dict):
            pip += [str(line) for line in dep.get("pip", [])]
        else:
            conda.append(str(dep))
    return EnvFile(path.name, tuple(conda), tuple(pip))


def env_problems(env: EnvFile, installed=version) -> list[str]:
    """What is wrong with an env file: unpinned, not the venv's version, snakemake, a local path (empty: nothing)."""
    problems = []
    for spec in env.conda:
        name, _, pinned = spec.partition("=")
        if name not in CONDA_ALLOWED:
            problems.append(f"{env.name}: conda installs {spec!r}; only {sorted(CONDA_ALLOWED)} come from conda")
        elif name == "python" and pinned != f"{sys.version_info.major}.{sys.version_info.minor}":
            problems.append(f"{env.name}: {spec!r}, but the venv runs Python {sys.version.split()[0]}")
    for line in env.pip:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            problems.append(f"{env.name}: pip line {line!r} is not a requirement (a path or an option?)")
            continue
        if req.url:
            problems.append(f"{env.name}: {line!r} installs from a URL or path, not a pinned release")
            continue
        name = canonicalize_name(req.name)
        if FORBIDDEN.match(name):
            problems.append(f"{env.name}: installs {req.name}; Snakemake must stay outside the job's env")
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            problems.append(f"{env.name}: {line!r} is not pinned with ==")
            continue
        try:
            have = installed(req.name)
        except PackageNotFoundError:
            problems.append(f"{env.name}: {req.name} is not installed in the tested venv")
            continue
        if specs[0].version != have:
            problems.append(f"{env.name}: {req.name}=={specs[0].version}, but the tested venv has {have}")
    return problems


def env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"), key=lambda p: p.name)


def families() -> dict[str, dict[str, list[str]]]:
    return yaml.safe_load(FAMILIES.read_text())


# --- rules ----------------------------------------------------------------------------------------------------

RULE_HEADER = re.compile(r"^([ \t]*)(?:rule|checkpoint)\s+(\w+)\s*:", re.M)  # also inside `if` blocks
STRING = re.compile(r"""(['"])(.*?)(?<!\\)\1""")
PYTHON_M = re.compile(r"(?:^|\s)-m\s+([A-Za-z_][\w.]*)")


@dataclass(frozen=True)
class RuleCode:
    rule: str
    file: str  # the rules file, relative to the repository root
    conda: str | None  # env path relative to the repository root, as the rule names it
    code: str | None  # a script path relative to the repository root, or a module run with `python -m`
    runs_in_snakemake: bool  # a `run:` block


def read_rules(text: str, rules_file: Path) -> list[RuleCode]:
    """Each rule's conda env and code, from the text of a rules file (paths resolved from the file's folder)."""
    out = []
    headers = list(RULE_HEADER.finditer(text))
    for header in headers:
        indent = header.group(1)
        body = _rule_body(text[header.end() :], indent)
        sections = _directives(body, indent)
        conda = _first_string(sections.get("conda", ""))
        script = _first_string(sections.get("script", ""))
        modules = PYTHON_M.findall(" ".join(s for _, s in STRING.findall(sections.get("shell", ""))))
        code = _relative(rules_file.parent / script) if script else (modules[0] if modules else None)
        out.append(
            RuleCode(
                rule=header.group(2),
                file=_relative(rules_file),
                conda=_relative(rules_file.parent / conda) if conda else None,
                code=code,
                runs_in_snakemake="run" in sections,
            )
        )
    return out


def rule_problems(rule: RuleCode, env_of_code: dict[str, str]) -> list[str]:
    """What is wrong with a rule's env: missing, not a file, not the env its code's family names (empty: nothing)."""
    where = f"rule {rule.rule} ({rule.file})"
    if rule.runs_in_snakemake:
        return [f"{where}: a run: block ignores conda: {rule.conda}"] if rule.conda else []
    if rule.code is None:
        return [f"{where}: names {rule.conda} but runs neither script: nor python -m"] if rule.conda else []
    if rule.conda is None:
        return [f"{where}: runs {rule.code} but names no conda: env"]
    problems = []
    if not (ROOT / rule.conda).is_file():
        have = ", ".join(f"envs/{p.name}" for p in env_files() if p.name != FAMILIES.name)
        problems.append(f"{where}: its conda env {rule.conda} does not exist (the envs are {have})")
    family = env_of_code.get(rule.code)
    if family is None:
        problems.append(f"{where}: runs {rule.code}, which envs/families.yaml lists under no env")
    elif rule.conda != f"envs/{family}":
        problems.append(f"{where}: runs {rule.code} in {rule.conda}; envs/families.yaml says envs/{family}")
    return problems


def all_rules() -> list[RuleCode]:
    return [r for path in RULE_FILES for r in read_rules(path.read_text(), path)]


def _rule_body(rest: str, indent: str) -> str:
    """The rule's block: up to the next code line indented no deeper than the rule's header."""
    end = re.search(rf"^(?={re.escape(indent)}[^\s#])|^(?!{re.escape(indent)})(?=[ \t]*[^\s#])", rest, re.M)
    return rest[: end.start()] if end else rest


def _directives(body: str, indent: str) -> dict[str, str]:
    """Directive name -> its text, for the directives one level (4 spaces) below the rule's header."""
    marks = list(re.finditer(rf"^{re.escape(indent)} {{4}}(\w+):", body, re.M))
    return {m.group(1): body[m.end() : nxt.start() if nxt else len(body)] for m, nxt in zip(marks, marks[1:] + [None])}


def _first_string(section: str) -> str | None:
    m = STRING.search(section)
    return m.group(2) if m else None


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


# --- imports --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportWalk:
    third_party: dict[str, set[str]]  # top-level module -> the files that import it
    local: dict[str, Path]  # every local module reached (name -> file), the start files excluded


def walk_imports(start: list[tuple[Path, str]], roots: list[Path]) -> ImportWalk:
    """The modules the start files (path, module name; __main__ for a script) import, through every local module
    they reach.

    A module is local when it resolves to a file under one of `roots` (the workflow folder, the starting files'
    own folders): such modules are followed. Every import statement counts, wherever it sits (inside functions,
    branches). Files are named relative to the repository.
    """
    found: dict[str, set[str]] = {}
    local: dict[str, Path] = {}
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path, module = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if module != "__main__":
            local[module] = path
        for imported in _imports(path, module, roots):
            chain = _local_chain(imported, roots)
            if chain:
                todo += [(f, name) for name, f in chain]
                continue
            top = imported.split(".")[0]
            if top not in sys.stdlib_module_names:
                found.setdefault(top, set()).add(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    return ImportWalk(found, local)


def third_party_imports(start: list[tuple[Path, str]], roots: list[Path]) -> dict[str, set[str]]:
    """Top-level third-party modules the start files import (see walk_imports): module -> importing files."""
    return walk_imports(start, roots).third_party


def env_distributions(env: EnvFile) -> set[str]:
    """The env's pinned distributions and everything they require (extras and markers honoured), as installed in
    the tested venv: what pip puts into the env."""
    todo = [Requirement(line) for line in env.pip]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        for line in distribution(req.name).requires or []:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in req.extras | {""}):
                todo.append(dep)
    return {name for name, _ in done}


def site_of(dists: set[str], folder: Path) -> Path:
    """A folder holding links to exactly the venv's files of `dists` (their top-level packages, modules and
    metadata), to import from in place of the whole site-packages. A namespace folder that several distributions
    share (nvidia/) is linked whole."""
    folder.mkdir(parents=True)
    for name in sorted(dists):
        dist = distribution(name)
        assert dist.files is not None, f"{name} in the venv has no RECORD: cannot tell its files"
        base = Path(dist.locate_file(""))
        for top in sorted({f.parts[0] for f in dist.files} - {"..", "__pycache__"}):
            if not (folder / top).exists() and (base / top).exists():
                (folder / top).symlink_to(base / top)
    return folder


def provided_modules(env: EnvFile) -> set[str]:
    """Top-level modules that the env's pinned distributions install (as the venv's copies of them do)."""
    pinned = {canonicalize_name(Requirement(line).name) for line in env.pip}
    return {
        module
        for module, dists in _packages_distributions().items()
        if any(canonicalize_name(d) in pinned for d in dists)
    }


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return packages_distributions()


def family_start(spec: dict[str, list[str]]) -> tuple[list[tuple[Path, str]], list[Path]]:
    """The files a family's code starts from (path, module name), and the roots its local imports resolve under."""
    start, roots = [], [CODE]
    for script in spec.get("scripts", []):
        start.append((ROOT / script, "__main__"))
        roots.append((ROOT / script).parent)  # Snakemake's preamble puts the script's folder on sys.path
    for module in spec.get("modules", []):
        main = _module_file(f"{module}.__main__", [CODE])
        start.append((main, f"{module}.__main__") if main else (_module_file(module, [CODE]), module))
    for folder in spec.get("loaded", []):
        start += [(path, path.stem) for path in sorted((ROOT / folder).glob("*.py"))]
        roots.append(ROOT / folder)
    return start, roots


def _imports(path: Path, module: str, roots: list[Path]) -> set[str]:
    """Absolute names of every module an import statement in `path` names (`from a import b`: a, and a.b if local)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}", roots)}
    return names


def _local_chain(name: str, roots: list[Path]) -> list[tuple[str, Path]]:
    """The local modules that importing `name` executes (each parent package, then the module); [] if not local."""
    parts = name.split(".")
    chain = [(".".join(parts[:i]), _module_file(".".join(parts[:i]), roots)) for i in range(1, len(parts) + 1)]
    if chain[0][1] is None:
        return []
    return [(n, f) for n, f in chain if f is not None]


def _module_file(name: str, roots: list[Path]) -> Path | None:
    for root in roots:
        base = root.joinpath(*name.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
    return None


# --- tests: env files ------------------------------------------------------------------------------------------


def test_the_env_folder_holds_the_three_families_and_their_code_table():
    assert [p.name for p in env_files()] == ["families.yaml", "imaging.yaml", "nnunet.yaml", "stats.yaml"]
    assert sorted(families()) == ["imaging.yaml", "nnunet.yaml", "stats.yaml"]


@pytest.mark.parametrize("name", ["imaging.yaml", "nnunet.yaml", "stats.yaml"])
def test_env_pins_every_package_to_the_version_installed_in_the_tested_venv(name):
    env = read_env(ENVS / name)
    assert env.pip, f"{name} installs nothing with pip"
    assert env_problems(env) == []


def test_env_check_names_a_wrong_version_an_unpinned_line_snakemake_and_a_relative_path():
    env = EnvFile(
        "bad.yaml",
        conda=("python=3.9", "numpy=2.4.6", "pip"),
        pip=("numpy==2.4.5", "scipy>=1.11", "snakemake==9.27.1", "snakemake-executor-plugin-slurm==2.8.0", "-e .."),
    )
    installed = {"numpy": "2.4.6", "scipy": "1.15.3", "snakemake": "9.27.1", "snakemake-executor-plugin-slurm": "2.8.0"}
    problems = env_problems(env, installed=installed.__getitem__)
    assert problems == [
        f"bad.yaml: 'python=3.9', but the venv runs Python {sys.version.split()[0]}",
        "bad.yaml: conda installs 'numpy=2.4.6'; only ['pip', 'python'] come from conda",
        "bad.yaml: numpy==2.4.5, but the tested venv has 2.4.6",
        "bad.yaml: 'scipy>=1.11' is not pinned with ==",
        "bad.yaml: installs snakemake; Snakemake must stay outside the job's env",
        "bad.yaml: installs snakemake-executor-plugin-slurm; Snakemake must stay outside the job's env",
        "bad.yaml: pip line '-e ..' is not a requirement (a path or an option?)",
    ]


def test_env_check_refuses_a_requirement_that_installs_from_a_local_path():
    env = EnvFile("bad.yaml", conda=(), pip=("cadsflow @ file:///work/main",))
    assert env_problems(env, installed=lambda name: "0.1.0") == [
        "bad.yaml: 'cadsflow @ file:///work/main' installs from a URL or path, not a pinned release"
    ]


# --- tests: rules -> envs --------------------------------------------------------------------------------------


def test_every_rule_runs_its_code_in_the_env_its_family_names():
    env_of_code = {code: env for env, spec in families().items() for kind in spec.values() for code in kind}
    problems = [p for rule in all_rules() for p in rule_problems(rule, env_of_code)]
    assert problems == []


def test_rules_reader_finds_each_rules_conda_env_and_its_script_or_python_module(tmp_path):
    text = textwrap.dedent('''\
        rule a:
            """Doc: conda: is mentioned here."""
            output:
                "x",
            conda:
                "../envs/imaging.yaml"
            script:
                "../workflow_scripts/entry/standardize.py"


        def helper():
            return "python -m not.this"


        rule b:
            conda:
                "../envs/nnunet.yaml"
            shell:
                "nnUNet_extTrainer={params.t:q} {PY} -m cadsflow.pseudolabel --group {wildcards.group}"
                " --log {log:q}"


        rule c:
            input:
                "x",


        if DEMO:

            rule d:
                conda:
                    "../envs/imaging.yaml"
                script:
                    "../workflow_scripts/entry/demo_cohort.py"


        rule e:
            run:
                print("no env")
        ''')
    rules = read_rules(text, ROOT / "rules" / "example.smk")
    assert rules == [
        RuleCode("a", "rules/example.smk", "envs/imaging.yaml", "workflow_scripts/entry/standardize.py", False),
        RuleCode("b", "rules/example.smk", "envs/nnunet.yaml", "cadsflow.pseudolabel", False),
        RuleCode("c", "rules/example.smk", None, None, False),
        RuleCode("d", "rules/example.smk", "envs/imaging.yaml", "workflow_scripts/entry/demo_cohort.py", False),
        RuleCode("e", "rules/example.smk", None, None, True),
    ]


def test_rule_check_names_the_rule_whose_env_file_is_gone_or_is_not_its_familys():
    table = {"workflow_scripts/entry/standardize.py": "imaging.yaml"}
    gone = RuleCode(
        "standardize", "rules/standardize.smk", "envs/cads.yaml", "workflow_scripts/entry/standardize.py", False
    )
    wrong = RuleCode(
        "standardize", "rules/standardize.smk", "envs/stats.yaml", "workflow_scripts/entry/standardize.py", False
    )
    bare = RuleCode("quarantine", "rules/standardize.smk", None, "workflow_scripts/entry/quarantine_table.py", False)
    bare_message = "rule quarantine (rules/standardize.smk): runs workflow_scripts/entry/quarantine_table.py"
    assert rule_problems(gone, table) == [
        "rule standardize (rules/standardize.smk): its conda env envs/cads.yaml does not exist"
        " (the envs are envs/imaging.yaml, envs/nnunet.yaml, envs/stats.yaml)",
        "rule standardize (rules/standardize.smk): runs workflow_scripts/entry/standardize.py in envs/cads.yaml;"
        " envs/families.yaml says envs/imaging.yaml",
    ]
    assert rule_problems(wrong, table) == [
        "rule standardize (rules/standardize.smk): runs workflow_scripts/entry/standardize.py in envs/stats.yaml;"
        " envs/families.yaml says envs/imaging.yaml"
    ]
    assert rule_problems(bare, table) == [f"{bare_message} but names no conda: env"]


def test_every_entry_script_and_family_path_is_listed_once_and_exists():
    listed = [code for spec in families().values() for kind in spec.values() for code in kind]
    assert len(listed) == len(set(listed))
    scripts = {code for code in listed if code.endswith(".py")}
    unlisted = sorted({str(p.relative_to(ROOT)) for p in ENTRY.glob("*.py")} - scripts)
    assert unlisted == [], f"entry scripts that envs/families.yaml lists under no env: {unlisted}"
    for spec in families().values():
        start, _ = family_start(spec)
        assert all(path is not None and path.is_file() for path, _ in start), spec


# --- tests: imports -> envs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["imaging.yaml", "nnunet.yaml", "stats.yaml"])
def test_family_code_imports_only_third_party_modules_its_env_installs(name):
    start, roots = family_start(families()[name])
    needed = third_party_imports(start, roots)
    provided = provided_modules(read_env(ENVS / name))
    missing = {module: sorted(files) for module, files in needed.items() if module not in provided}
    assert missing == {}, f"envs/{name} does not install what its code imports: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imaging.yaml", "nnunet.yaml", "stats.yaml"])
def test_family_code_imports_with_only_its_envs_packages_and_the_workflow_folder(name, tmp_path):
    """Every module the family reaches (cadsflow modules, trainers, each third-party module it imports, lazily or
    not) imports in a Python without site-packages whose path holds only the env's distributions (pins and their
    requirements) and the workflow folder."""
    env = read_env(ENVS / name)
    site = site_of(env_distributions(env), tmp_path / "site")
    start, roots = family_start(families()[name])
    walk = walk_imports(start, roots)
    modules = sorted(walk.third_party) + sorted(walk.local)
    probe = (
        "import importlib, json, sys\n"
        "sys.path[:0] = json.loads(sys.argv[1])\n"
        "failed = {}\n"
        "for m in sys.argv[2:]:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as exc:\n"
        "        failed[m] = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps(failed))\n"
    )
    path = json.dumps([str(site), *map(str, dict.fromkeys(roots))])
    run = subprocess.run(
        [sys.executable, "-S", "-E", "-c", probe, path, *modules], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.splitlines()[-1]) == {}


def test_import_walk_follows_local_modules_and_lazy_imports_and_skips_the_standard_library(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import json\n")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    import torch.nn\n    from ..other import g\n")
    (pkg / "other.py").write_text("import yaml as y\nfrom scipy.ndimage import label\ndef g():\n    pass\n")
    (pkg / "unused.py").write_text("import pandas\n")
    script = tmp_path / "entry.py"
    script.write_text("import os\nfrom pkg.sub import leaf\nif False:\n    import numpy\n")
    needed = third_party_imports([(script, "__main__")], [tmp_path])
    leaf, other = str(pkg / "sub" / "leaf.py"), str(pkg / "other.py")
    assert needed == {"torch": {leaf}, "yaml": {other}, "scipy": {other}, "numpy": {str(script)}}


def test_env_provides_the_import_names_of_its_distributions_not_their_package_names():
    env = EnvFile("x.yaml", conda=(), pip=("pyyaml==6.0.4", "scikit-image==0.26.0", "antspyx==0.6.1"))
    provided = provided_modules(env)
    assert {"yaml", "skimage", "ants"} <= provided
    assert "numpy" not in provided  # a dependency of scikit-image, but not pinned by this env


# --- tests: entry scripts find cadsflow from the workflow folder -------------------------------------------------


@pytest.mark.parametrize("script", sorted(p.name for p in ENTRY.glob("*.py")))
def test_entry_script_puts_the_workflow_folder_first_on_sys_path_before_importing_cadsflow(script):
    tree = ast.parse((ENTRY / script).read_text())
    bootstrap = ast.dump(ast.parse(BOOTSTRAP).body[0])
    position = {"bootstrap": None, "cadsflow": None}
    for i, node in enumerate(tree.body):
        if ast.dump(node) == bootstrap and position["bootstrap"] is None:
            position["bootstrap"] = i
        is_cadsflow = isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cadsflow"
        if is_cadsflow and position["cadsflow"] is None:
            position["cadsflow"] = i
    assert position["bootstrap"] is not None, f"{script} does not put the workflow folder on sys.path ({BOOTSTRAP})"
    assert (
        position["cadsflow"] is None or position["bootstrap"] < position["cadsflow"]
    ), f"{script} imports cadsflow first"


def test_snakemake_script_preamble_gives_the_entry_folder_as_scriptdir(monkeypatch):
    """The bootstrap's premise, from Snakemake's own preamble builder: snakemake.scriptdir is the script's folder."""
    from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, Wildcards
    from snakemake.script import PythonScript
    from snakemake.sourcecache import infer_source_file

    script = infer_source_file(str(ENTRY / "standardize.py"))
    preamble = PythonScript.generate_preamble(
        script,
        None,
        "",
        str(ROOT),
        InputFiles(),
        OutputFiles(),
        Params(),
        Wildcards(),
        1,
        {},
        Log(),
        {},
        "standardize",
        None,
        None,
        None,
        None,
        None,
        1,
        None,
        True,
        None,
        True,
    )
    monkeypatch.setattr(sys, "path", list(sys.path))  # the preamble extends sys.path
    namespace: dict = {}
    exec(preamble, namespace)
    assert Path(namespace["snakemake"].scriptdir).parent == CODE


def test_entry_script_runs_through_snakemake_where_cadsflow_is_not_installed(tmp_path):
    """A Python that sees the venv's third-party packages but not its cadsflow install runs a real entry script."""
    python = _python_without_cadsflow(tmp_path / "venv")
    batch = tmp_path / "results" / "standardized" / "demo.0000"
    for vid, record in {
        "demo_a": {"volume_id": "demo_a", "source": "demo", "split": "test", "status": "ok"},
        "demo_b": {
            "volume_id": "demo_b",
            "source": "demo",
            "split": "train_gt",
            "status": "quarantined",
            "file": "/data/b.nii.gz",
            "reason": "zero-byte file",
        },
    }.items():
        (batch / vid).mkdir(parents=True)
        (batch / vid / "record.json").write_text(json.dumps(record))
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""\
            rule quarantine_table:
                input:
                    "results/standardized/demo.0000",
                output:
                    quarantine="quarantine.tsv",
                    status="status.tsv",
                log:
                    "quarantine.log",
                script:
                    "{ENTRY / 'quarantine_table.py'}"
            """))
    run = subprocess.run(
        [python, "-m", "snakemake", "quarantine.tsv", "--cores", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (
        tmp_path / "quarantine.tsv"
    ).read_text() == "volume_id\tfile\treason\ndemo_b\t/data/b.nii.gz\tzero-byte file\n"
    assert (tmp_path / "status.tsv").read_text() == (
        "volume_id\tsource\tsplit\tstatus\ndemo_a\tdemo\ttest\tok\ndemo_b\tdemo\ttrain_gt\tquarantined\n"
    )


def _python_without_cadsflow(venv: Path) -> str:
    """A fresh venv whose only packages are the tested venv's site-packages, added without their .pth files, so the
    editable cadsflow install (a .pth) is not on its path."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "tested_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([python, "-c", "import cadsflow"], capture_output=True, text=True)
    assert "No module named 'cadsflow'" in probe.stderr, "cadsflow is importable: the test would prove nothing"
    return python
