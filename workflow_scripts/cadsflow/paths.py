"""Locations of the project's own data files (config tables shipped with the repository)."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "config"
STRUCTURES_TSV = CONFIG_DIR / "structures.tsv"
