"""Where per-volume files live: each job that writes one file per volume owns a folder (a declared `directory()`
output), so Snakemake's clean-up of incomplete jobs, `--delete-all-output`, `--list-changes` and `--summary` see
every map it wrote.

The convention: a job's report table `<dir>/<name>.tsv` and its folder of maps `<dir>/<name>/` lie side by side
(`results/pseudolabels/551/shard_3.tsv` and `results/pseudolabels/551/shard_3/<volume_id>.nii.gz`). A reader that
needs the maps of many jobs gets their folders and builds one `MapIndex` (one directory listing per folder, no
per-volume globbing: at 22,022 volumes a group has ~111 shard folders).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

MAP_SUFFIX = ".nii.gz"
MapFolders = str | Path | Iterable[str | Path]  # one job folder of maps, or several (a reader spanning shards)


def job_folder(report_path: str | Path) -> Path:
    """The folder of per-volume files that belongs to a job's report: `<dir>/<name>.tsv` -> `<dir>/<name>`."""
    report_path = Path(report_path)
    if report_path.suffix != ".tsv":
        raise ValueError(f"{report_path}: a job report is a .tsv file; its folder of maps is named after it")
    return report_path.with_suffix("")


def map_path(folder: str | Path, volume_id: str) -> Path:
    """A volume's map in one job folder: `<folder>/<volume_id>.nii.gz`."""
    return Path(folder) / f"{volume_id}{MAP_SUFFIX}"


class MapIndex:
    """Volume id -> map path over several job folders, listed once each.

    A volume found in two folders is an error naming both: it means folders of an older sharding are still on
    disk, and reading either map could mix two runs. A folder that does not exist holds nothing (a job whose
    volumes were all quarantined may not create it)."""

    def __init__(self, folders: Iterable[str | Path]):
        self.folders = [Path(f) for f in folders]
        self._paths: dict[str, Path] = {}
        for folder in self.folders:
            for name in _listdir(folder):
                if not name.endswith(MAP_SUFFIX) or name.startswith("."):
                    continue  # partial writes (cadsflow.atomic's hidden temporaries), reports, previews
                volume_id = name[: -len(MAP_SUFFIX)]
                path = folder / name
                if volume_id in self._paths:
                    raise ValueError(f"volume {volume_id} has a map in two job folders: {self._paths[volume_id]} "
                                     f"and {path}; remove the folders of the older run")
                self._paths[volume_id] = path

    @classmethod
    def of(cls, folders: MapFolders | MapIndex | None) -> MapIndex | None:
        """The index of one folder or of several; an index is kept as it is, None stays None (no maps given)."""
        if folders is None or isinstance(folders, MapIndex):
            return folders
        return cls([folders] if isinstance(folders, (str, Path)) else folders)

    def __contains__(self, volume_id: str) -> bool:
        return volume_id in self._paths

    def __len__(self) -> int:
        return len(self._paths)

    def get(self, volume_id: str) -> Path | None:
        return self._paths.get(volume_id)

    def path(self, volume_id: str) -> Path:
        """The volume's map; FileNotFoundError naming the folders searched when no folder holds it."""
        try:
            return self._paths[volume_id]
        except KeyError:
            where = ", ".join(str(f) for f in self.folders) or "(no folders given)"
            raise FileNotFoundError(f"no map of volume {volume_id} in {where}") from None

    def ids(self) -> list[str]:
        return sorted(self._paths)


def _listdir(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [entry.name for entry in entries if entry.is_file()]
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise NotADirectoryError(f"{folder}: expected a folder of per-volume maps, found a file") from None
