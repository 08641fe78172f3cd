# Input functions and checks shared by every rules file; every path comes from brainage.paths.derived.

import functools
import os
import re
from pathlib import Path

import pandas as pd

from brainage import demographics, ixi, synth
from brainage.config import check_config
from brainage.io import read_table
from brainage.paths import BIDS_SUBJECT, IXI_SUBJECT, RESULTS, derived, ixi_archive
from brainage.vocabulary import BASELINES, CHANNELS, RAW_SCANS, T1, TOF, TOF_BIN

# A configuration that passed is remembered under .snakemake/, so reruns skip importing torch.
check_config(config, Path(".snakemake") / "brainage_checked_configs")

IS_SYNTHETIC = config["dataset"]["source"] == "synthetic"
IS_BIDS = config["dataset"]["source"] == "bids"
DOWNLOADS_IXI = config["dataset"]["source"] == "ixi" and config["dataset"].get("download", False)
# The entities of one baseline fit and of one training run, as wildcards.
BASELINE_WILDCARDS = {"modality": "{modality}", "model": "{model}"}
RUN_WILDCARDS = {**BASELINE_WILDCARDS, "replicate": "{replicate}"}
# The entities of one cross-validation run: a run of the first replicate, in one fold.
FOLD_RUN_WILDCARDS = {"fold": "{fold}", **BASELINE_WILDCARDS}
# Cross-validation beside the study's split: off at 0 folds.
CROSSVAL_FOLDS = config["cross_validation"]["folds"]
# The report's category of the attribution maps, after 5. Evaluation.
ATTRIBUTION_CATEGORY = "6. Where the model looks"


wildcard_constraints:
    subject=BIDS_SUBJECT if IS_BIDS else IXI_SUBJECT,
    modality="|".join(map(re.escape, config["channel_sets"])),
    model="|".join(config["models"]),
    replicate=r"\d+",
    fold=r"\d+",


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
    return rules.assemble_synthetic_ixi.output.raw if IS_SYNTHETIC else config["dataset"]["raw_dir"]


def demographics_sheet() -> str:
    """The table of ages: the synthetic or IXI sheet, or a BIDS dataset's participants.tsv."""
    if IS_SYNTHETIC:
        return rules.assemble_synthetic_ixi.output.sheet
    if IS_BIDS:
        from brainage.bids import PARTICIPANTS

        return str(Path(raw_dir()) / PARTICIPANTS)
    return config["dataset"]["demographics"]


def participant_columns() -> dict:
    """brainage.bids.build_bids_inventory's column arguments, from config dataset.participants."""
    columns = config["dataset"]["participants"]
    return {"age_column": columns["age"], "sex_column": columns["sex"], "site_column": columns["site"]}


def download_dir() -> Path:
    return Path(config["dataset"].get("download_dir", derived("ixi", name="downloads")))


def check_existing_sheet() -> None:
    """A sheet that is already there is read now, so a wrong sheet or column stops the run before
    any job; a BIDS dataset is validated and its participants.tsv read (pybids is imported only
    for BIDS: it adds a third of a second to every start)."""
    if IS_SYNTHETIC:
        return
    if IS_BIDS:
        from brainage import bids

        bids.scan_bids(Path(raw_dir()))
        bids.read_participants(Path(raw_dir()), **participant_columns(), age_range=config["dataset"]["age_range"])
        return
    sheet = Path(demographics_sheet())
    if sheet.exists():
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
    return {scan: row[f"path_{scan}"] for scan in RAW_SCANS}


def per_subject(pattern):
    """Input function: `pattern` expanded over the included subjects."""

    def expand_subjects(wildcards):
        return expand(pattern, subject=included_subjects())

    return expand_subjects


def channel_arrays(subject: str, channels=CHANNELS) -> dict[str, str]:
    """{channel: the subject's training array}: the outputs of rule training_arrays."""
    return {channel: str(derived("preprocess", subject=subject, channel=channel)) for channel in channels}


def training_arrays(subjects: list[str], channels=CHANNELS) -> dict[str, dict[str, str]]:
    """{subject: {channel: training array}} for several subjects."""
    return {subject: channel_arrays(subject, channels) for subject in subjects}


def array_files(arrays: dict[str, dict[str, str]]) -> list[str]:
    return [path for channels in arrays.values() for path in channels.values()]


def synthetic_truth(wildcards) -> str:
    """The subject's ground truth, written by rule synthesize_subject into the subject's folder."""
    return str(derived("synthetic", subject=wildcards.subject, ext=".json"))


def ground_truth(wildcards) -> list[str]:
    return [synthetic_truth(wildcards)] if IS_SYNTHETIC else []


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
        # The system's device folder, built from os.sep: snakemake --lint takes a quoted absolute
        # path for a data path that should be configurable.
        return not hidden and any(Path(os.sep, "dev").glob("nvidia[0-9]*"))
    return True


def runs() -> list[tuple[str, str, int]]:
    """Every (modality, model, replicate) to evaluate, the first replicate of each run first.

    A baseline is deterministic and fitted once: it is a run of the first replicate only.
    """
    first = config["replicates"][0]
    return [
        (modality, model, replicate)
        for replicate in config["replicates"]
        for modality in config["channel_sets"]
        for model in config["models"]
        if replicate == first or model not in BASELINES
    ]


def trained_runs() -> list[tuple[str, str, int]]:
    """The runs of rule train (the networks), in the order of runs()."""
    return [run for run in runs() if run[1] not in BASELINES]


def run_outputs(pattern, selected=None) -> list[str]:
    """`pattern` (an output of a per-run rule) for every run of `selected` (default: runs()), in order."""
    selected = runs() if selected is None else selected
    if not selected:
        return []
    modalities, models, replicates = zip(*selected)
    return expand(pattern, zip, modality=modalities, model=models, replicate=replicates)


def run_predictions() -> list[str]:
    """Every run's predictions table, in the order of runs(): rule fit_baseline's for a baseline,
    rule train's otherwise."""
    return [
        run_outputs(
            rules.fit_baseline.output.predictions if run[1] in BASELINES else rules.train.output.predictions, [run]
        )[0]
        for run in runs()
    ]


def attributed_runs() -> list[tuple[str, str, int]]:
    """The runs that get attribution maps: the first replicate (the headline one) of every
    network; a baseline has no gradients."""
    first = config["replicates"][0]
    return [run for run in trained_runs() if run[2] == first]


def attribution_atlas() -> list[str]:
    """The optional atlas image and label table of config attribution.atlas, as inputs."""
    atlas = config["attribution"]["atlas"]
    return [atlas["image"], atlas["labels"]] if atlas else []


def channel_set(wildcards) -> list[str]:
    """The channels of the run's modality."""
    return config["channel_sets"][wildcards.modality]


def run_inputs(wildcards) -> dict:
    """What a run of any model, and its attribution, reads: the manifest, the split and the modality's arrays."""
    return {
        "manifest": rules.manifest.output.manifest,
        "split": rules.split.output.split,
        # The arrays the run reads (through the manifest's tensor columns), declared so that a
        # rewritten array reruns the run.
        "arrays": array_files(training_arrays(included_subjects(), channel_set(wildcards))),
    }


def training_seed(wildcards) -> int:
    """Replicate k trains with the config's seed + k."""
    return config["seed"] + int(wildcards.replicate)


def folds() -> list[int]:
    """The cross-validation folds, numbered from 1; none when cross-validation is off."""
    return list(range(1, CROSSVAL_FOLDS + 1))


def fold_split(fold) -> str:
    """Fold `fold`'s split (its held-out subjects labelled eval), written by rule crossval_split."""
    return rules.crossval_split.output.splits[int(fold) - 1]


def fold_runs() -> list[tuple[int, str, str]]:
    """Every (fold, modality, model) of cross-validation: the first replicate's runs, in each fold."""
    first = config["replicates"][0]
    return [(fold, modality, model) for fold in folds() for modality, model, replicate in runs() if replicate == first]


def fold_run_inputs(wildcards) -> dict:
    """What a cross-validation run reads: a run's inputs, with its fold's split instead of the study's."""
    return {**run_inputs(wildcards), "split": fold_split(wildcards.fold)}


def fold_predictions() -> list[str]:
    """Every cross-validation run's predictions table, in the order of fold_runs(): rule
    fit_baseline_fold's for a baseline, rule train_fold's otherwise."""
    return [
        expand(
            rules.fit_baseline_fold.output.predictions if model in BASELINES else rules.train_fold.output.predictions,
            fold=fold,
            modality=modality,
            model=model,
        )[0]
        for fold, modality, model in fold_runs()
    ]


def final_outputs() -> list:
    return [
        rules.manifest.output.manifest,
        rules.qc_gallery.output[0],
        rules.split.output.split,
        rules.split.output.figure,
        rules.evaluate.output.metrics,
        rules.evaluate.output.comparisons,
        rules.evaluate.output.learning_curves,
        rules.evaluate.output.predictions_figure,
        rules.evaluate.output.error_vs_age,
        rules.evaluate.output.mae,
        *run_outputs(rules.attribution.output.table, attributed_runs()),
        *run_outputs(rules.attribution.output.figure, attributed_runs()),
        rules.benchmark_summary.output.figure,
        rules.youngest_and_oldest.output[0],
        *crossval_outputs(),
    ]


def crossval_outputs() -> list:
    """Cross-validation's tables and figures, when it is on."""
    if not CROSSVAL_FOLDS:
        return []
    output = rules.crossval_evaluate.output
    return [
        output.metrics,
        output.comparisons,
        output.designs,
        output.predictions_figure,
        output.folds,
        output.differences,
    ]
