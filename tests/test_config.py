"""A bad configuration stops the run before any job, with the offending key named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate

from brainage import config as config_module
from brainage.config import ConfigError, check_config
from brainage.data import TRANSFORMS
from brainage.models import MODELS
from conftest import ROOT, run_snakemake

SCHEMA = ROOT / "config" / "schema.yaml"


def shipped_config(*overlays: str) -> dict:
    """config/config.yaml overlaid, as Snakemake's --configfile does, by the named config files."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for name in overlays:
        update_config(config, yaml.safe_load((ROOT / "config" / name).read_text()))
    return config


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
        ({"models": {"cnn3d": {"params": {"chanels": [4, 8]}}}}, "'models.cnn3d.params.chanels': unknown parameter"),
        ({"training": {"augmentation": [{"name": "RandomNoise", "sdt": 0.1}]}}, "'training.augmentation[0]'"),
        ({"preprocessing": {"qc_bounds": {"nmi_T2": 1.1}}}, "'preprocessing.qc_bounds.nmi_T2': unknown QC metric"),
        ({"dataset": {"age_range": [90, 18]}}, "'dataset.age_range'"),
        ({"replicates": [0, 0]}, "replicates"),
        ({"replicates": []}, "replicates"),
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


def test_check_config_names_the_key_of_a_bad_age_range() -> None:
    config = shipped_config()
    config["dataset"]["age_range"] = [50, 50]
    with pytest.raises(ConfigError, match=r"'dataset.age_range': lower bound 50 must be below the upper bound 50"):
        check_config(config)


@pytest.mark.parametrize(
    ("model", "params", "expected"),
    [
        ("cnn3d", {"chanels": [4, 8]},
         r"'models.cnn3d.params.chanels': unknown parameter; valid: channels, dropout, age_mean, age_sd$"),
        ("highresnet", {"norm": "group"}, r"'models.highresnet.params.norm': set by the workflow from training.norm"),
        ("sfcn", {"dropout": "high"}, r"'models.sfcn.params': .*dropout"),
        ("sfcn", {"age_min": 20, "age_max": 20.5}, r"'models.sfcn.params': sfcn age range \[20, 20.5\)"),
        ("cnn3d", {"channels": [-4]}, r"'models.cnn3d.params': .*negative dimension"),
        ("highresnet", {"widths": [4, 8]}, r"'models.highresnet.params': highresnet needs one dilation per width"),
    ],
)
def test_model_params_are_tried_on_the_model(model: str, params: dict, expected: str) -> None:
    config = shipped_config()
    config["models"][model]["params"] = params
    with pytest.raises(ConfigError, match=expected):
        check_config(config)


@pytest.mark.parametrize(
    ("where", "entries", "expected"),
    [
        ("training", [{"name": "RandomFlip"}, {"name": "RandomWarp"}],
         r"'training.augmentation\[1\]': augmentation entry 1 has name 'RandomWarp'; allowed: .*RandomBlur"),
        ("training", [{"name": "RandomFlip"}, {"name": "RandomAffine"}, {"name": "RandomBiasField", "coefficent": 0.3}],
         r"'training.augmentation\[2\]': .*unexpected keyword argument 'coefficent'"),
        ("sfcn", [{"name": "RandomNoise", "std": "loud"}], r"'models.sfcn.training.augmentation\[0\]': .*std"),
        ("cnn3d", [{"name": "RandomGamma", "p": 2}], r"'models.cnn3d.training.augmentation\[0\]': .*Probability"),
    ],
)
def test_augmentation_entries_are_tried_on_torchio(where: str, entries: list, expected: str) -> None:
    config = shipped_config()
    training = config["training"] if where == "training" else config["models"][where].setdefault("training", {})
    training["augmentation"] = entries
    with pytest.raises(ConfigError, match=expected):
        check_config(config)


def test_qc_bounds_name_metrics_the_workflow_computes() -> None:
    config = shipped_config()
    config["preprocessing"]["qc_bounds"]["reg_error_TOF_mm"] = 1.0
    expected = (r"'preprocessing.qc_bounds.reg_error_TOF_mm': unknown QC metric; "
                r"valid: nmi_T1, nmi_TOF, corr_T1, corr_TOF, mask_volume_ml, vessel_volume_ml$")
    with pytest.raises(ConfigError, match=expected):
        check_config(config)


def test_schema_allows_every_transform_and_model_the_code_has() -> None:
    config = shipped_config()
    config["training"]["augmentation"] = [{"name": name} for name in TRANSFORMS]
    validate(copy.deepcopy(config), str(SCHEMA))
    check_config(config)
    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(schema["properties"]["models"]["properties"]) == set(MODELS)


@pytest.mark.parametrize(
    "overlay", [(), ("tiny.yaml",), ("ixi.yaml",), ("replicates.yaml",)], ids=["default", "tiny", "ixi", "replicates"]
)
def test_shipped_configs_pass_and_a_rerun_skips_the_costly_checks(
    overlay: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = shipped_config(*overlay)
    validate(copy.deepcopy(config), str(SCHEMA))
    check_config(config, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1

    def fail(config: dict) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(config_module, "_check_code_arguments", fail)
    check_config(config, tmp_path)  # same configuration: remembered
    config["models"]["cnn3d"]["params"]["dropout"] = 0.25
    with pytest.raises(AssertionError, match="checked again"):
        check_config(config, tmp_path)
