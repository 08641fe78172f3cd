# Paths, input functions and checks shared by every rules file.

import functools
import os
import re
from pathlib import Path

import pandas as pd

from brainage import demographics, ixi, synth
from brainage.config import check_config
from brainage.io import read_table

# A configuration that passed is remembered under .snakemake/, so reruns skip importing torch.
check_config(config, Path(".snakemake") / "brainage_checked_configs")

RESULTS = Path("results")
SYNTHETIC = RESULTS / "synthetic"
SYNTHETIC_TRUTH = SYNTHETIC / "subjects" / "{subject}" / "{subject}.json"
PREPROCESS = RESULTS / "preprocess" / "{subject}"
TRAIN = RESULTS / "train" / "{modality}" / "{model}" / "replicate{replicate}"
# Outside the rule's outputs, so that Snakemake does not delete a half-trained run's state.
TRAIN_CHECKPOINTS = RESULTS / "checkpoints" / "{modality}" / "{model}" / "replicate{replicate}"
LOGS = RESULTS / "logs"
BENCHMARKS = RESULTS / "benchmarks"

IS_SYNTHETIC = config["dataset"]["source"] == "synthetic"
DOWNLOADS_IXI = not IS_SYNTHETIC and config["dataset"].get("download", False)
IXI_DOWNLOADS = Path(config["dataset"].get("download_dir", "results/ixi/downloads"))


wildcard_constraints:
    subject=r"IXI\d{3}",
    modality="|".join(map(re.escape, config["modalities"])),
    model="|".join(config["models"]),
    replicate=r"\d+",


@functools.cache
def synthetic_plan() -> pd.DataFrame:
    """The synthetic cohort, known from the config alone, so its jobs can be planned upfront."""
    params = config["synthetic"]
    return synth.plan_cohort(params["n_subjects"], config["seed"], params["bio_age_sigma"])


def synthetic_row(wildcards) -> dict:
    plan = synthetic_plan().set_index("subject")
    return {"subject": wildcards.subject, **plan.loc[wildcards.subject].to_dict()}


@functools.cache
def ixi_file_table() -> pd.DataFrame:
    return ixi.read_file_table(Path(workflow.basedir) / config["dataset"]["file_table"])


def ixi_file_entry(name: str) -> ixi.FileEntry:
    """The file's URL, size and checksum; the config's md5_overrides have the last word."""
    return ixi.file_entry(ixi_file_table(), name, config["dataset"].get("md5_overrides", {}).get(name))


def raw_dir() -> str:
    return str(SYNTHETIC / "IXI") if IS_SYNTHETIC else config["dataset"]["raw_dir"]


def demographics_sheet() -> str:
    return str(SYNTHETIC / "IXI.xls") if IS_SYNTHETIC else config["dataset"]["demographics"]


def check_existing_sheet() -> None:
    """A sheet that is already there is read now, so a wrong sheet or column stops the run before any job."""
    sheet = Path(demographics_sheet())
    if not IS_SYNTHETIC and sheet.exists():
        demographics.read_demographics(sheet, config["dataset"]["sheet"])


check_existing_sheet()


def inventory_table() -> pd.DataFrame:
    """The inventory, once the checkpoint has run: every later per-subject job hangs on it."""
    path = Path(checkpoints.inventory.get().output.subjects)
    return read_inventory(path, path.stat().st_mtime_ns)


@functools.cache
def read_inventory(path: Path, mtime_ns: int) -> pd.DataFrame:
    # Input functions ask for the table once per job; keyed by mtime, a rewritten table is re-read.
    return read_table(path)


def included_subjects(wildcards=None) -> list[str]:
    table = inventory_table()
    return sorted(table.loc[table["included"].astype(bool), "subject"])


def raw_images(wildcards) -> dict[str, str]:
    row = inventory_table().set_index("subject").loc[wildcards.subject]
    return {"pd": row["path_PD"], "t1": row["path_T1"], "mra": row["path_MRA"]}


def per_subject(pattern):
    """Input function: `pattern` expanded over the included subjects."""

    def expand_subjects(wildcards):
        return expand(pattern, subject=included_subjects())

    return expand_subjects


def ground_truth(wildcards) -> list[str]:
    return [str(SYNTHETIC_TRUTH).format(subject=wildcards.subject)] if IS_SYNTHETIC else []


def model_training(model: str) -> dict:
    """Shared training settings, overridden by the model's own `training` entry."""
    return {**config["training"], **config["models"][model].get("training", {})}


def trains_on_gpu(model: str) -> bool:
    """Whether the model's training jobs take a `gpu` token (one at a time per GPU) or train on
    the CPU beside each other.

    `auto` looks for NVIDIA device files instead of asking torch, whose import would add
    seconds to every Snakemake start, a no-op rerun included.
    """
    device = model_training(model)["device"]
    if device == "cpu":
        return False
    if device == "auto":
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")
        return not hidden and any(Path("/dev").glob("nvidia[0-9]*"))
    return True


def runs() -> list[tuple[str, str, int]]:
    """Every (modality, model, replicate) to train, the first replicate of each run first."""
    return [
        (modality, model, replicate)
        for replicate in config["replicates"]
        for modality in config["modalities"]
        for model in config["models"]
    ]


def run_outputs(name: str) -> list[str]:
    return [str(TRAIN / name).format(modality=m, model=n, replicate=r) for m, n, r in runs()]


def training_seed(wildcards) -> int:
    """Replicate k trains with the config's seed + k."""
    return config["seed"] + int(wildcards.replicate)


def final_outputs() -> list[str]:
    outputs = [
        RESULTS / "manifest" / "manifest.csv",
        RESULTS / "manifest" / "qc_gallery.png",
        RESULTS / "split" / "split.csv",
        RESULTS / "split" / "split.png",
        RESULTS / "evaluation" / "metrics.csv",
        RESULTS / "evaluation" / "comparisons.csv",
        RESULTS / "evaluation" / "learning_curves.png",
        RESULTS / "evaluation" / "predictions.png",
        RESULTS / "evaluation" / "error_vs_age.png",
        RESULTS / "evaluation" / "mae.png",
        RESULTS / "evaluation" / "benchmarks.png",
        RESULTS / "figures" / "youngest_oldest.png",
    ]
    return [str(path) for path in outputs]
