"""Checks of the workflow configuration that a JSON schema cannot express.

config/schema.yaml catches unknown keys, wrong types, bad values and the keys one setting
requires (names, bounds and vocabularies pinned to the code by tests/test_config.py); these
checks catch what a schema cannot express: combinations that cannot work and arguments the code
would refuse (model parameters, augmentation entries), before any job runs, with the offending
key in the message.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from brainage.vocabulary import BASELINES

# A usable fraction below which a synthetic cohort of n subjects cannot fill the split:
# the generator's IXI-like quirks exclude roughly one subject in eight.
SYNTHETIC_USABLE_FRACTION = 0.85
# Published SFCN widths: five pooled blocks, then a pointwise one.
SFCN_DEFAULT_CHANNELS = 6
# Model constructor arguments that the workflow supplies itself, and where they come from.
SET_BY_WORKFLOW = {"in_channels": "the run's channel_sets entry", "norm": "training.norm"}
# Libraries whose argument checking _check_code_arguments relies on, beside this package.
CHECKED_LIBRARIES = ("torch", "torchio")


class ConfigError(ValueError):
    """A configuration that cannot run, naming the key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {problem}")


def check_config(config: Mapping[str, Any], checked_dir: Path | None = None) -> None:
    """Raise :class:`ConfigError` for the first impossible combination or refused argument found.

    Trying model parameters and augmentation entries on the code imports torch, torchio and
    matplotlib (about 2 s, on every Snakemake start). With ``checked_dir``, a pass is remembered
    there as an empty file named by a hash of the configuration, this package's code and the
    library versions, so that a rerun of an unchanged configuration skips that part.
    """
    dataset = config["dataset"]
    low, high = dataset["age_range"]
    if not low < high:
        raise ConfigError("dataset.age_range", f"lower bound {low:g} must be below the upper bound {high:g}")
    if dataset["source"] == "synthetic":
        _check_cohort_size(config)

    _check_code_arguments_once(config, checked_dir)

    if "sfcn" in config["models"]:
        shape = config["preprocessing"]["grid"]["shape"]
        channels = config["models"]["sfcn"].get("params", {}).get("channels", [None] * SFCN_DEFAULT_CHANNELS)
        # Every block but the last halves the grid; an axis must keep at least one voxel.
        needed = 2 ** (len(channels) - 1)
        if min(shape) < needed:
            raise ConfigError(
                "preprocessing.grid.shape",
                f"{shape} is too small for sfcn with {len(channels) - 1} pooled blocks: "
                f"every axis needs at least {needed} voxels",
            )

    for prefix, training in _trainings(config).items():
        weights = training.get("init_weights")
        if weights and not Path(weights).is_file():
            raise ConfigError(f"{prefix}.init_weights", f"file '{weights}' does not exist")

    atlas = config["attribution"]["atlas"]
    if atlas:
        if not config["preprocessing"]["template"]:
            raise ConfigError(
                "attribution.atlas", "an atlas in template space needs preprocessing.template: true (a template grid)"
            )
        for key in ("image", "labels"):
            if not Path(atlas[key]).is_file():
                raise ConfigError(f"attribution.atlas.{key}", f"file '{atlas[key]}' does not exist")


def _check_cohort_size(config: Mapping[str, Any]) -> None:
    n_subjects = config["synthetic"]["n_subjects"]
    split = config["split"]
    needed = split["eval_size"] + split["tune_size"] + split["eval_size"] // 2
    usable = int(n_subjects * SYNTHETIC_USABLE_FRACTION)
    if usable < needed:
        raise ConfigError(
            "split.eval_size",
            f"eval_size {split['eval_size']} + tune_size {split['tune_size']} leaves too few training "
            f"subjects: about {usable} of synthetic.n_subjects={n_subjects} are usable, "
            f"at least {needed} are needed",
        )


def _trainings(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The shared training settings and each model's overrides, by config key."""
    trainings = {"training": config["training"]}
    for name, model in config["models"].items():
        trainings[f"models.{name}.training"] = model.get("training", {})
    return trainings


def _check_code_arguments_once(config: Mapping[str, Any], checked_dir: Path | None) -> None:
    """:func:`_check_code_arguments`, skipped when ``checked_dir`` holds this configuration's pass."""
    if checked_dir is None:
        _check_code_arguments(config)
        return
    stamp = Path(checked_dir) / _code_arguments_key(config)
    if not stamp.exists():
        _check_code_arguments(config)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()


def _check_code_arguments(config: Mapping[str, Any]) -> None:
    """Model parameters and augmentation entries, against the code that will use them."""
    for name, model in config["models"].items():
        if name in BASELINES:
            continue  # config/schema.yaml names and types every parameter of a baseline
        norm = {**config["training"], **model.get("training", {})}["norm"]
        _check_model_params(name, model.get("params", {}), norm)
    for prefix, training in _trainings(config).items():
        _check_augmentation(prefix, training.get("augmentation", []))


def _check_model_params(name: str, params: Mapping[str, Any], norm: str) -> None:
    """The parameters by name against the model's constructor, then by value by building the
    model on the meta device (shapes only: no memory, no arithmetic)."""
    # Imported here, not at the top: torch and torchio take seconds, on every Snakemake start.
    import torch

    from brainage.models import MODELS, build_model

    accepted = [p for p in inspect.signature(MODELS[name]).parameters if p not in SET_BY_WORKFLOW]
    for key in params:
        if key in SET_BY_WORKFLOW:
            raise ConfigError(
                f"models.{name}.params.{key}", f"set by the workflow from {SET_BY_WORKFLOW[key]}; remove it"
            )
        if key not in accepted:
            raise ConfigError(f"models.{name}.params.{key}", f"unknown parameter; valid: {', '.join(accepted)}")
    try:
        with torch.device("meta"):
            build_model(name, 1, norm=norm, **params)
    except (TypeError, ValueError, RuntimeError) as error:
        # RuntimeError: torch refuses impossible shapes, such as a negative width.
        raise ConfigError(f"models.{name}.params", str(error)) from error


def _check_augmentation(prefix: str, entries: Sequence[Mapping[str, Any]]) -> None:
    """Build the entries as the training job will, naming the first that fails by its index.

    The list is built one entry longer each time, so the failing entry is the last one built
    and build_transforms' message numbers it as the config does.
    """
    from brainage.data import build_transforms

    for position in range(len(entries)):
        try:
            build_transforms(entries[: position + 1], binary_channels=())
        except ValueError as error:
            raise ConfigError(f"{prefix}.augmentation[{position}]", str(error)) from error


def _code_arguments_key(config: Mapping[str, Any]) -> str:
    """A hash of what :func:`_check_code_arguments` depends on: the whole configuration, this
    package's code and the versions of the libraries it tries arguments on."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    for library in CHECKED_LIBRARIES:
        digest.update(metadata.version(library).encode())
    return digest.hexdigest()
