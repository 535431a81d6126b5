"""Send a rule's Python logging and stray prints to its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path


@contextlib.contextmanager
def to_log(path: str | Path):
    """Route logging, stdout and stderr into `path` for the duration; exceptions are logged, then re-raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                yield
        except BaseException:
            logging.getLogger("cadsflow").exception("rule failed")
            raise
        finally:
            root.removeHandler(handler)


def to_log_if(path: str | Path | None):
    """to_log(path) when a log file is given (a rule's job), else nothing (a command run by hand prints)."""
    return to_log(path) if path else contextlib.nullcontext()
