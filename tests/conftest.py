"""Shared helpers for tests that run the Snakemake workflow itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# The local HTTP server fixture `server`, for download tests.
pytest_plugins = ("http_server",)

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
# The header row of IXI.xls as IXI ships it, written out here independently of the code that
# writes (brainage.synth) and reads (brainage.demographics) it.
IXI_SHEET_HEADER = [
    "IXI_ID",
    "SEX_ID (1=m, 2=f)",
    "HEIGHT",
    "WEIGHT",
    "ETHNIC_ID",
    "MARITAL_ID",
    "OCCUPATION_ID",
    "QUALIFICATION_ID",
    "DOB",
    "DATE_AVAILABLE",
    "STUDY_DATE",
    "AGE",
]


def snakemake_command(
    workdir: Path, *args: str, config: dict | None = None, base_configs: tuple[Path, ...] = ()
) -> list[str]:
    """The command that runs the workflow in ``workdir`` on ``base_configs``, tiny, ``config``."""
    command = [
        str(SNAKEMAKE),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--workflow-profile",
        "none",
        *args,
        # Last, because --configfile takes every file name that follows it.
        "--configfile",
        *map(str, base_configs),
        str(ROOT / "config" / "tiny.yaml"),
    ]
    if config:
        override = workdir / "override.yaml"
        override.write_text(yaml.safe_dump(config))
        command.append(str(override))
    return command


def run_snakemake(
    workdir: Path,
    *args: str,
    config: dict | None = None,
    base_configs: tuple[Path, ...] = (),
    timeout: int = 1200,
) -> subprocess.CompletedProcess:
    """Run :func:`snakemake_command` and capture its output."""
    command = snakemake_command(workdir, *args, config=config, base_configs=base_configs)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
