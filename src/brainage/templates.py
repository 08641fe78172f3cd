"""The MNI152 2009a symmetric templates that nilearn ships: T1 and GM/WM probability maps, 1 mm.

They are the synthetic dataset's anatomy (:mod:`brainage.synth.anatomy`) and the registration
target (:mod:`brainage.registration`); both find them here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

TEMPLATE_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"


def template_path(name: str = TEMPLATE_T1) -> Path:
    """Path of a template file shipped inside the nilearn package (found without importing it)."""
    # find_spec locates the data without importing nilearn.datasets, which takes over a second.
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn is not installed; it ships the MNI152 template")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"MNI152 template file missing: {path}")
    return path
