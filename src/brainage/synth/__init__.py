"""A synthetic IXI-like dataset whose anatomy carries a known, hidden age signal.

The workflow's default input is generated here, laid out exactly like the real IXI download
(``IXI-T1/IXI002-Guys-0828-T1.nii.gz``, ``IXI-PD/...-PD.nii.gz``, ``IXI-MRA/...-MRA.nii.gz`` and
an ``IXI.xls`` demographics sheet with the real sheet's quirks), so every later stage runs the
same code on synthetic and real data, and on synthetic data its answers can be checked.

Coordinates and ground truth. "Head coordinates" are the template's RAS millimetres (MNI152
2009a sym space) of the subject's own anatomy. Each scan has its own 4x4 ``head_to_scanner``
matrix (RAS mm to RAS mm): a session pose shared by all scans times a per-scan rigid motion
(rotations up to 5 degrees, translations up to 5 mm, drawn from ``(seed, subject)``), so the
scans of one subject must be registered for real. The convention is: the image intensity at
scanner point ``x`` is the anatomy at head point ``inv(head_to_scanner) @ x``; equivalently
voxel ``ijk`` shows head point ``inv(head_to_scanner) @ affine @ ijk``. The truth file
``<subject>.json`` holds subject, age, bio_age, sex, site and ``head_to_scanner`` for T1, PD
and MRA as nested lists.

Modules, one concept each: :mod:`.cohort` (the plan, file names, ground-truth table),
:mod:`.sheet` (``IXI.xls``), :mod:`.anatomy` (template tissue maps), :mod:`.ageing` (what
``bio_age`` does to them), :mod:`.tissue` (noise-free rendering), :mod:`.vessels` (the arterial
tree), :mod:`.scanner` (geometry, motion, bias, noise, site gain), :mod:`.subject` (one subject's
files), :mod:`.assemble` (the IXI folder) and :mod:`.seeding` (random streams).
"""

from brainage.synth.assemble import assemble_dataset
from brainage.synth.cohort import (
    USABLE_STATUSES,
    plan_cohort,
    subject_files,
    usable_subjects,
    write_ground_truth_table,
)
from brainage.synth.sheet import write_demographics
from brainage.synth.subject import synthesize_subject
from brainage.synth.vessels import vessel_tree

__all__ = [
    "USABLE_STATUSES",
    "assemble_dataset",
    "plan_cohort",
    "subject_files",
    "synthesize_subject",
    "usable_subjects",
    "vessel_tree",
    "write_demographics",
    "write_ground_truth_table",
]
