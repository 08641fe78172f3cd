"""Checks of the workflow configuration that a JSON schema cannot express.

config/schema.yaml catches unknown keys, wrong types and bad values; these checks catch
combinations that cannot work, before any job runs, with the offending key in the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# A usable fraction below which a synthetic cohort of n subjects cannot fill the split:
# the generator's IXI-like quirks exclude roughly one subject in eight.
SYNTHETIC_USABLE_FRACTION = 0.85
# Published SFCN widths: five pooled blocks, then a pointwise one.
SFCN_DEFAULT_CHANNELS = 6


class ConfigError(ValueError):
    """A configuration that cannot run, naming the key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {problem}")


def check_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for the first impossible combination found."""
    dataset = config["dataset"]
    if dataset["source"] == "synthetic":
        if "synthetic" not in config:
            raise ConfigError("synthetic", "required when dataset.source is 'synthetic'")
        _check_cohort_size(config)
    else:
        for key in ("raw_dir", "demographics"):
            if not dataset.get(key):
                raise ConfigError(f"dataset.{key}", "required when dataset.source is 'ixi'")

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

    trainings = {"training": config["training"]}
    for name, model in config["models"].items():
        trainings[f"models.{name}.training"] = model.get("training", {})
    for prefix, training in trainings.items():
        weights = training.get("init_weights")
        if weights and not Path(weights).is_file():
            raise ConfigError(f"{prefix}.init_weights", f"file '{weights}' does not exist")


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
