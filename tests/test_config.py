"""A bad configuration stops the run before any job, with the offending key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainage.config import ConfigError, check_config
from conftest import run_snakemake


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"synthetic": {"n_subjects": -5}}, "n_subjects"),
        ({"synthetic": {"n_subjects": "many"}}, "n_subjects"),
        ({"split": {"eval_sise": 50}}, "eval_sise"),
        ({"training": {"epochs": 2.5}}, "epochs"),
        ({"models": {"resnet": {}}}, "resnet"),
        ({"modalities": {"T2": ["T2"]}}, "T2"),
        ({"split": {"eval_size": 500}}, "split.eval_size"),
        ({"training": {"init_weights": "missing.pt"}}, "training.init_weights"),
        ({"models": {"sfcn": {"params": {"channels": [4, 8, 8, 8, 8, 8]}}}}, "preprocessing.grid.shape"),
    ],
)
def test_bad_config_stops_before_any_job(workdir: Path, override: dict, expected: str) -> None:
    result = run_snakemake(workdir, "-n", config=override, timeout=120)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_check_config_names_the_key() -> None:
    config = {
        "dataset": {"source": "ixi"},
        "preprocessing": {"grid": {"shape": [32, 32, 32]}},
        "models": {},
        "training": {},
    }
    with pytest.raises(ConfigError, match="dataset.raw_dir"):
        check_config(config)
