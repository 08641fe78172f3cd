"""The per-subject outputs laid out as one read-only, IXI-like raw-data folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from brainage.synth.cohort import subject_files


def assemble_dataset(subject_dirs: Mapping[str, Path], plan: pd.DataFrame, raw_dir: Path) -> int:
    """Lay the planned images of each subject's folder (:mod:`brainage.synth.subject`) out as one
    IXI-like folder; ``subject_dirs`` maps every imaged subject of ``plan`` to its folder.

    Files are hard-linked (copied where links are impossible) into a temporary folder that is
    renamed into place, and made read-only like extracted raw data: the workflow never writes
    into its raw-data folder. Returns the number of images.
    """
    raw_dir = Path(raw_dir)
    staging = raw_dir.with_name(f".{raw_dir.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    count = 0
    for row in plan[plan["imaged"]].to_dict("records"):
        for relative in subject_files(row).values():
            image, target = Path(subject_dirs[row["subject"]]) / relative, staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(image, target)
            except OSError:
                shutil.copyfile(image, target)
            target.chmod(0o444)
            count += 1
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    staging.rename(raw_dir)
    return count
