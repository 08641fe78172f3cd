"""Logging for workflow jobs: everything a job prints goes to its Snakemake log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def log_to_file(path: str | Path) -> logging.Logger:
    """Send the ``logging`` records, ``print`` output and warnings of this job to ``path``.

    Snakemake keeps the log of a failed job, so whatever the job said before it died stays
    readable there; uncaught errors still reach Snakemake's own output through stderr.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", buffering=1)
    sys.stdout = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    logger = logging.getLogger("brainage")
    _log_uncaught_errors(logger)
    return logger


def _log_uncaught_errors(logger: logging.Logger) -> None:
    """Put the error that ends the job into its log too, not only into Snakemake's output."""
    previous = sys.excepthook

    def log_then_report(kind, error, traceback) -> None:
        logger.error("%s: %s", kind.__name__, error)
        previous(kind, error, traceback)

    sys.excepthook = log_then_report
