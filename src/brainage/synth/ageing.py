"""How a subject's hidden biological age ``bio_age`` changes its anatomy, in every modality.

* global atrophy: the brain (GM, WM, ventricles) shrinks about the brain centre inside a fixed
  skull, so sulcal and extra-axial CSF widens;
* cortical thinning: the GM partial-volume rim is eroded and becomes CSF;
* ventricular enlargement: the ventricles dilate into the surrounding white matter, faster when
  old;
* in the TOF-MRA, the arterial tree (:func:`brainage.synth.vessels.vessel_tree`) loses small
  branches, its distal signal falls and its tortuosity rises (from :func:`age_fraction`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AgeEffects:
    """How one biological age deforms the template anatomy."""

    brain_scale: float  # linear size of the brain inside a fixed skull
    gm_erosion: float  # GM partial-volume level below which the cortical rim turns to CSF
    ventricle_level: float  # level of the ventricle map down to which tissue is ventricle


def age_fraction(bio_age: float) -> float:
    """Biological age mapped to 0 at 20 years and 1 at 85, a little beyond for outliers."""
    return float(np.clip((bio_age - 20.0) / 65.0, -0.15, 1.2))


def age_effects(bio_age: float) -> AgeEffects:
    """The anatomy's age changes; biological ages under 20 keep the template's ventricles."""
    a = age_fraction(bio_age)
    older = max(a, 0.0)
    # About 13% brain volume lost from 20 to 85; ventricles grow 3-4 fold (17 to ~60 ml by 80),
    # faster late in life.
    return AgeEffects(
        brain_scale=1.0 - 0.045 * a,
        gm_erosion=0.2 * older,
        ventricle_level=0.9 - 0.45 * (0.35 * older + 0.65 * older**2),
    )
