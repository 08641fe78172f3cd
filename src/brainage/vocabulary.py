"""The study's words, each defined once: IXI's scans and sites, the training channels, the subsets,
the baseline models.

Raw scans are what IXI ships, named as in its files: T1, PD and MRA (the time-of-flight MR
angiogram). From registration on, the angiogram is the TOF channel: the rule ``register``
(:func:`brainage.registration.register_subject`) reads the subject's MRA and writes it as the
registered TOF image and the TOF-to-PD transform. That is the only place where MRA becomes TOF;
before it every name says MRA, after it every name says TOF (:data:`REGISTERED_FROM` maps back).

A modality of the study (the config's ``channel_sets``, the ``modality`` wildcard and column) is
one named set of these channels, such as ``T1+TOF_bin``.
"""

from __future__ import annotations

from typing import Final

# IXI's raw scans.
T1: Final = "T1"
PD: Final = "PD"
MRA: Final = "MRA"
RAW_SCANS: Final = (T1, PD, MRA)
# IXI's imaging sites, as in its file names (IXI002-Guys-0828-T1.nii.gz).
SITES: Final = ("Guys", "HH", "IOP")

# Training channels: PD-space images resampled onto the training grid.
TOF: Final = "TOF"
TOF_BIN: Final = "TOF_bin"
CHANNELS: Final = (T1, TOF, TOF_BIN)
# Channels stored as uint8 0/1 masks: resampled by area fraction, augmented as label maps.
BINARY_CHANNELS: Final = frozenset({TOF_BIN})
# Channels that show the arterial tree: drawn as maximum-intensity projections.
ANGIOGRAPHIC_CHANNELS: Final = frozenset({TOF, TOF_BIN})
# The raw scan each registered image comes from (the MRA-to-TOF rename above).
REGISTERED_FROM: Final = {T1: T1, TOF: MRA}

# The split's subsets: train fits, tune selects the epoch, eval only scores.
TRAIN: Final = "train"
TUNE: Final = "tune"
EVAL: Final = "eval"
SUBSETS: Final = (TRAIN, TUNE, EVAL)

# Models of the study that are fitted, not trained: brainage.baseline's classical baseline, beside
# the networks of brainage.models.MODELS. Deterministic, so fitted once, whatever the replicates.
BASELINES: Final = ("ridge",)
