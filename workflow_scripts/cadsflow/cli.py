"""Command-line entry points (installed as console scripts by pyproject.toml)."""

from __future__ import annotations

import argparse
import logging
import sys

from cadsflow.sheet import SheetError


def sheet_main(argv=None) -> int:
    """cads-sheet: build the volume sheet (TSV) from a source registry."""
    from cadsflow.sheet import write_sheet
    from cadsflow.sources import RegistryError, discover_volumes, load_registry

    parser = argparse.ArgumentParser(prog="cads-sheet", description=sheet_main.__doc__)
    parser.add_argument("registry", help="source registry YAML")
    parser.add_argument("-o", "--out", required=True, help="volume sheet to write (TSV)")
    args = parser.parse_args(argv)
    try:
        volumes = discover_volumes(load_registry(args.registry))
    except (RegistryError, SheetError) as exc:
        print(f"cads-sheet: {exc}", file=sys.stderr)
        return 2
    ids = [v.volume_id for v in volumes]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        print(f"cads-sheet: duplicate volume ids {dupes[:10]}", file=sys.stderr)
        return 2
    write_sheet(volumes, args.out)
    counts = {s: sum(v.split == s for v in volumes) for s in ("train_gt", "train_unlabelled", "test")}
    print(f"wrote {args.out}: {len(volumes)} volumes {counts}")
    return 0


def demo_main(argv=None) -> int:
    """cads-demo-cohort: write the embedded phantom cohort (images, labels, registry, sheet)."""
    from cadsflow.demo import ensure_demo_cohort

    parser = argparse.ArgumentParser(prog="cads-demo-cohort", description=demo_main.__doc__)
    parser.add_argument("out_dir", nargs="?", default="resources/demo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_demo_cohort(args.out_dir))
    return 0
