"""One subject's raw scans and truth JSON, the unit of work of the synthesis jobs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from brainage.io import save_image, write_json
from brainage.synth.ageing import age_effects
from brainage.synth.anatomy import template_anatomy, working_step
from brainage.synth.cohort import subject_files
from brainage.synth.scanner import acquire, head_to_scanner, scan_grid, scanner_image
from brainage.synth.seeding import random_stream
from brainage.synth.tissue import CONTRAST, render_tissue
from brainage.synth.vessels import vessel_tree
from brainage.vocabulary import MRA, RAW_SCANS


def synthesize_subject(row: Mapping, raw_dir: Path, truth: Path, scale: float, seed: int) -> None:
    """Write one subject's raw NIfTIs under ``raw_dir``, in IXI's layout, and its truth JSON as ``truth``.

    Deterministic from ``(seed, subject)`` and independent of every other subject, so subjects
    can be synthesized by parallel jobs in any order.
    """
    subject = str(row["subject"])
    bio_age = float(row["bio_age"])
    site = str(row["site"])
    anatomy = template_anatomy(working_step(scale))
    effects = age_effects(bio_age)
    poses = head_to_scanner(random_stream(seed, "motion", subject))
    for scan, relative_path in subject_files(row).items():
        shape, affine = scan_grid(scan, scale)
        voxel_to_head = np.linalg.inv(poses[scan]) @ affine
        clean = render_tissue(shape, voxel_to_head, effects, anatomy, CONTRAST[scan])
        if scan == MRA:
            _, vessels = vessel_tree(shape, voxel_to_head, bio_age, random_stream(seed, "vessels", subject))
            clean = clean * (1.0 - vessels) + vessels
        data = acquire(clean, scan, site, random_stream(seed, "acquisition", scan, subject))
        save_image(scanner_image(data, affine), Path(raw_dir) / relative_path)
    record = {
        "subject": subject,
        "age": float(row["age"]),
        "bio_age": bio_age,
        "sex": int(row["sex"]),
        "site": site,
        "head_to_scanner": {scan: poses[scan].tolist() for scan in RAW_SCANS},
    }
    write_json(record, truth)
