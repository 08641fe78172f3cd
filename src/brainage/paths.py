"""Every file the workflow derives, named by one builder: entities in, path out.

:func:`derived` is modelled on hippunfold's ``bids()``: a file is described by its stage and
entities (subject, modality, model, replicate, fold, channel, rule, name, ext) and the builder alone
turns them into a path under ``results/``. Values may be real (``subject="IXI002"``) or Snakemake
wildcards (``subject="{subject}"``), so the rules declare their patterns and the scripts and
tests build concrete paths with the same call. :data:`LAYOUTS` is the whole naming scheme of
``results/``; a file's ``name`` is chosen once, in the rule that writes it, and every reader
refers to that rule's output.

IXI's own raw layout (``IXI-T1/IXI002-Guys-0828-T1.nii.gz``) is not ours to choose: it is built
by :func:`ixi_image` and parsed by :data:`IXI_IMAGE_NAME`, for the synthetic data and the real
download alike.
"""

from __future__ import annotations

import re
import string
from pathlib import Path, PurePosixPath

from brainage.vocabulary import RAW_SCANS, SITES

RESULTS = Path("results")

# Per stage, the path templates under the results root; the entities a call gives pick the
# template with exactly those fields.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "synthetic": (
        "synthetic/{name}",  # the IXI-like raw folder
        "synthetic/{name}{ext}",  # its demographics sheet, the hidden ground-truth table
        "synthetic/subjects/{subject}",  # one subject's generated scans, in IXI's layout
        "synthetic/subjects/{subject}/{subject}{ext}",  # and its ground truth
    ),
    "ixi": ("ixi/{name}",),
    "inventory": ("inventory/{name}{ext}",),
    "template": ("template/{name}{ext}",),
    "preprocess": (
        "preprocess/{subject}/{subject}_{name}{ext}",
        "preprocess/{subject}/tensors/{channel}.npy",  # training arrays
    ),
    "qc": ("qc/{subject}{ext}",),
    "manifest": ("manifest/{name}{ext}",),
    "split": ("split/{name}{ext}",),
    "train": (
        "train/{modality}/{model}/replicate{replicate}/{name}{ext}",
        "train/{modality}/{model}/{name}{ext}",  # a baseline: fitted once, without replicates
    ),
    # Outside train/, so that Snakemake, which deletes a failed job's outputs, keeps a
    # half-trained run's state.
    "checkpoints": (
        "checkpoints/{modality}/{model}/replicate{replicate}/{name}{ext}",
        "checkpoints/crossval/fold{fold}/{modality}/{model}/{name}{ext}",
    ),
    # Cross-validation beside the study's split: each fold's split, each fold's runs (trained
    # with the first replicate's seed), and the out-of-fold tables and figures.
    "crossval": (
        "crossval/{name}{ext}",
        "crossval/fold{fold}/{name}{ext}",
        "crossval/fold{fold}/{modality}/{model}/{name}{ext}",
    ),
    "evaluation": ("evaluation/{name}{ext}",),
    "attribution": (
        "attribution/{name}{ext}",  # the study's regions, shared by every run
        "attribution/{modality}/{model}/replicate{replicate}/{name}{ext}",
        # The folder of per-subject maps (config attribution.subject_maps), and each map in it.
        "attribution/{modality}/{model}/replicate{replicate}/subjects",
        "attribution/{modality}/{model}/replicate{replicate}/subjects/{subject}{ext}",
    ),
    "figures": ("figures/{name}{ext}",),
    "logs": (
        "logs/{rule}.log",
        "logs/{rule}/{subject}.log",
        "logs/{rule}/{name}.log",
        "logs/{rule}/{modality}_{model}_replicate{replicate}.log",
        "logs/{rule}/{modality}_{model}.log",
        "logs/{rule}/fold{fold}_{modality}_{model}.log",
    ),
    "benchmarks": (
        "benchmarks",
        "benchmarks/{rule}/all.tsv",
        "benchmarks/{rule}/{subject}.tsv",
        "benchmarks/{rule}/{name}.tsv",
        "benchmarks/{rule}/{modality}_{model}_replicate{replicate}.tsv",
        "benchmarks/{rule}/{modality}_{model}.tsv",
        "benchmarks/{rule}/fold{fold}_{modality}_{model}.tsv",
    ),
}


def _fields(template: str) -> frozenset[str]:
    return frozenset(field for _, field, _, _ in string.Formatter().parse(template) if field)


_TEMPLATES: dict[tuple[str, frozenset[str]], str] = {
    (stage, _fields(template)): template for stage, templates in LAYOUTS.items() for template in templates
}


def derived(
    stage: str,
    *,
    subject: str | None = None,
    modality: str | None = None,
    model: str | None = None,
    replicate: int | str | None = None,
    fold: int | str | None = None,
    channel: str | None = None,
    rule: str | None = None,
    name: str | None = None,
    ext: str | None = None,
    root: str | Path = RESULTS,
) -> Path:
    """The path of the ``stage`` file with these entities, under ``root``.

    ``ext`` includes its dot (``".nii.gz"``). Raises ValueError when the stage has no file with
    exactly the given entities, listing the combinations it has.
    """
    entities = {
        key: str(value)
        for key, value in {
            "subject": subject,
            "modality": modality,
            "model": model,
            "replicate": replicate,
            "fold": fold,
            "channel": channel,
            "rule": rule,
            "name": name,
            "ext": ext,
        }.items()
        if value is not None
    }
    if stage not in LAYOUTS:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(LAYOUTS)}")
    if ext is not None and not ext.startswith("."):
        raise ValueError(f"{stage} path: ext {ext!r} must start with a dot")
    template = _TEMPLATES.get((stage, frozenset(entities)))
    if template is None:
        options = "; ".join(", ".join(sorted(_fields(t))) or "(none)" for t in LAYOUTS[stage])
        raise ValueError(f"no {stage} path has exactly the entities {sorted(entities)}; {stage} paths take: {options}")
    return Path(root) / template.format(**entities)


# --- Subject ids ---------------------------------------------------------------------------
# Regular expressions for one subject id of each raw source, for the rules' ``subject`` wildcard
# constraint (and so for every path derived from an id).

IXI_SUBJECT = r"IXI\d{3}"
"""An IXI subject id, as in IXI's file names and :func:`brainage.demographics.subject_id`: IXI002."""

BIDS_PARTICIPANT = r"sub-[a-zA-Z0-9]+"
"""A BIDS participant, as in ``participants.tsv`` and file names: ``sub-<label>``."""

BIDS_SUBJECT = rf"{BIDS_PARTICIPANT}(?:_ses-[a-zA-Z0-9]+)?"
"""A BIDS subject id (:mod:`brainage.bids`): ``sub-<label>``, or ``sub-<label>_ses-<label>`` for one
session; BIDS labels are alphanumeric, so the ``_ses-`` part cannot be confused with the label."""

# --- IXI's raw layout ------------------------------------------------------------------------

IXI_IMAGE_NAME = re.compile(
    rf"(?P<subject>{IXI_SUBJECT})-(?P<site>{'|'.join(SITES)})-(?P<series>\d{{4}})"
    rf"-(?P<scan>{'|'.join(RAW_SCANS)})\.nii\.gz"
)
"""An IXI image's file name; groups subject, site, series, scan. The inverse of :func:`ixi_image`."""


def ixi_folder(scan: str) -> str:
    """The folder of one scan's images in the raw folder, and the stem of its IXI archive."""
    return f"IXI-{scan}"


def ixi_archive(scan: str) -> str:
    """The file name of IXI's archive of one scan, as IXI publishes it."""
    return f"{ixi_folder(scan)}.tar"


def ixi_image(subject: str, site: str, series: int, scan: str) -> PurePosixPath:
    """An image's path relative to the raw folder: ``IXI-T1/IXI002-Guys-0828-T1.nii.gz``."""
    return PurePosixPath(ixi_folder(scan), f"{subject}-{site}-{int(series):04d}-{scan}.nii.gz")
