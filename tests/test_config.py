"""A bad configuration stops the run before any job, with the offending key named."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from brainage import attribution, binarize, manifest, qc, registration, split
from brainage import config as config_module
from brainage.baseline import RidgeParams
from brainage.config import ConfigError, check_config
from brainage.data import TRANSFORMS
from brainage.device import select_device
from brainage.models import MODELS, NORMS
from brainage.synth import plan_cohort
from brainage.train import SCHEDULES, TrainingConfig
from brainage.vocabulary import BASELINES, CHANNELS, RAW_SCANS
from conftest import ROOT, run_snakemake

SCHEMA = ROOT / "config" / "schema.yaml"
# The schema's section of brainage.train.TrainingConfig's keys, shared and per model.
TRAINING = ("$defs", "training_overrides", "properties")
# The schema's section of brainage.baseline.RidgeParams, and its fields.
RIDGE_PARAMS = ("properties", "models", "properties", "ridge", "properties", "params")
RIDGE_FIELDS = [field.name for field in dataclasses.fields(RidgeParams)]
# Python types of the code's fields as JSON schema types.
JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", list: "array", type(None): "null"}


def shipped_config(*overlays: str) -> dict:
    """config/config.yaml overlaid, as Snakemake's --configfile does, by the named config files."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for name in overlays:
        update_config(config, yaml.safe_load((ROOT / "config" / name).read_text()))
    return config


def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def schema_at(*path: str) -> Any:
    """The schema's node at ``path``, a ``$ref`` followed to its definition."""
    node = schema()
    for key in path:
        node = node[key]
    if isinstance(node, dict) and "$ref" in node:
        return schema_at(*node["$ref"].removeprefix("#/").split("/"))
    return node


def schema_error(config: dict) -> str | None:
    """The schema's message for ``config``, or None when it passes."""
    try:
        validate(copy.deepcopy(config), str(SCHEMA))
    except WorkflowError as error:
        return str(error)
    return None


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"synthetic": {"n_subjects": -5}}, "n_subjects"),
        ({"synthetic": {"n_subjects": "many"}}, "n_subjects"),
        ({"split": {"eval_sise": 50}}, "eval_sise"),
        ({"training": {"epochs": 2.5}}, "epochs"),
        ({"models": {"resnet": {}}}, "resnet"),
        ({"channel_sets": {"T2": ["T2"]}}, "T2"),
        ({"split": {"eval_size": 500}}, "split.eval_size"),
        ({"training": {"init_weights": "missing.pt"}}, "training.init_weights"),
        ({"models": {"sfcn": {"params": {"channels": [4, 8, 8, 8, 8, 8]}}}}, "preprocessing.grid.shape"),
        ({"models": {"cnn3d": {"params": {"chanels": [4, 8]}}}}, "'models.cnn3d.params.chanels': unknown parameter"),
        ({"training": {"augmentation": [{"name": "RandomNoise", "sdt": 0.1}]}}, "'training.augmentation[0]'"),
        ({"preprocessing": {"qc_bounds": {"nmi_T2": 1.1}}}, "('nmi_T2' was unexpected)"),
        ({"dataset": {"age_range": [90, 18]}}, "'dataset.age_range'"),
        ({"replicates": [0, 0]}, "replicates"),
        ({"models": {"ridge": {"params": {"downsampel": 2}}}}, "('downsampel' was unexpected)"),
        ({"replicates": []}, "replicates"),
        ({"cross_validation": {"folds": 1}}, "cross_validation"),
    ],
)
def test_bad_config_stops_before_any_job(workdir: Path, override: dict, expected: str) -> None:
    result = run_snakemake(workdir, "-n", config=override, timeout=120)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert not (workdir / "results").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["dataset"].pop("raw_dir"), "'raw_dir' is a required property"),
        (lambda c: c["dataset"].update(demographics=""), "On instance['dataset']['demographics']"),
        (lambda c: c["dataset"].pop("file_table"), "'file_table' is a required property"),
        (lambda c: c["dataset"].update(source="synthetic") or c.pop("synthetic"), "'synthetic' is a required property"),
    ],
    ids=["ixi-raw_dir", "ixi-demographics", "download-file_table", "synthetic-section"],
)
def test_schema_requires_the_keys_a_setting_needs(change: Any, expected: str) -> None:
    config = shipped_config("ixi.yaml")
    change(config)
    assert expected in (schema_error(config) or "passed")


@pytest.mark.parametrize(
    ("template", "missing", "expected"),
    [
        (False, None, r"'attribution.atlas': an atlas in template space needs preprocessing.template: true"),
        (True, "labels", r"'attribution.atlas.labels': file '.*labels.tsv' does not exist"),
    ],
)
def test_check_config_names_an_atlas_it_cannot_use(tmp_path: Path, template: bool, missing: str, expected: str) -> None:
    atlas = {"image": str(tmp_path / "atlas.nii.gz"), "labels": str(tmp_path / "labels.tsv")}
    for key, path in atlas.items():
        if key != missing:
            Path(path).touch()
    config = shipped_config()
    config["preprocessing"]["template"] = template
    config["attribution"]["atlas"] = atlas
    assert schema_error(config) is None
    with pytest.raises(ConfigError, match=expected):
        check_config(config)


def test_check_config_names_the_key_of_a_bad_age_range() -> None:
    config = shipped_config()
    config["dataset"]["age_range"] = [50, 50]
    with pytest.raises(ConfigError, match=r"'dataset.age_range': lower bound 50 must be below the upper bound 50"):
        check_config(config)


@pytest.mark.parametrize(
    ("model", "params", "expected"),
    [
        (
            "cnn3d",
            {"chanels": [4, 8]},
            r"'models.cnn3d.params.chanels': unknown parameter; valid: channels, dropout, age_mean, age_sd$",
        ),
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
        (
            "training",
            [{"name": "RandomFlip"}, {"name": "RandomWarp"}],
            r"'training.augmentation\[1\]': augmentation entry 1 has name 'RandomWarp'; allowed: .*RandomBlur",
        ),
        (
            "training",
            [{"name": "RandomFlip"}, {"name": "RandomAffine"}, {"name": "RandomBiasField", "coefficent": 0.3}],
            r"'training.augmentation\[2\]': .*unexpected keyword argument 'coefficent'",
        ),
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
    config["preprocessing"]["qc_bounds"]["reg_error_TOF_mm"] = 1.0  # a column of synthetic runs only
    message = schema_error(config) or "passed"
    assert "('reg_error_TOF_mm' was unexpected)" in message and "On instance['preprocessing']['qc_bounds']" in message


def test_every_transform_the_schema_allows_builds_with_its_defaults() -> None:
    config = shipped_config()
    config["training"]["augmentation"] = [{"name": name} for name in TRANSFORMS]
    validate(copy.deepcopy(config), str(SCHEMA))
    check_config(config)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (("properties", "models", "properties"), [*MODELS, *BASELINES]),
        ((*RIDGE_PARAMS, "properties"), RIDGE_FIELDS),
        ((*RIDGE_PARAMS, "required"), RIDGE_FIELDS),
        ((*TRAINING, "norm", "enum"), NORMS),
        ((*TRAINING, "schedule", "enum"), SCHEDULES),
        ((*TRAINING, "augmentation", "items", "properties", "name", "enum"), TRANSFORMS),
        (("properties", "preprocessing", "properties", "registration", "enum"), registration.TRANSFORMS),
        (("properties", "preprocessing", "properties", "binarize", "properties", "method", "enum"), binarize.METHODS),
        (("properties", "preprocessing", "properties", "qc_bounds", "properties"), qc.QC_METRICS),
        (("properties", "split", "properties", "method", "enum"), split.METHODS),
        # The split balances by the manifest's categorical demographics: not the id, not the age it stratifies.
        (
            ("properties", "split", "properties", "balance_by", "items", "enum"),
            [column for column in manifest.DEMOGRAPHIC_COLUMNS if column not in ("subject", "age")],
        ),
        (("properties", "dataset", "properties", "required_scans", "items", "enum"), RAW_SCANS),
        (("$defs", "channel", "enum"), CHANNELS),
        (
            ("properties", "attribution", "properties"),
            [f.name for f in dataclasses.fields(attribution.AttributionSettings)],
        ),
    ],
    ids=[
        "models",
        "ridge-params",
        "ridge-params-required",
        "norms",
        "schedules",
        "transforms",
        "registrations",
        "binarize-methods",
        "qc-metrics",
        "split-methods",
        "balance-by",
        "raw-scans",
        "channels",
        "attribution-keys",
    ],
)
def test_schema_names_are_the_codes(path: tuple[str, ...], code: Any) -> None:
    assert set(schema_at(*path)) == set(code)


def test_schema_training_keys_and_types_are_the_training_configs() -> None:
    fields = {field.name for field in dataclasses.fields(TrainingConfig)}
    assert set(schema_at(*TRAINING)) == fields
    assert set(schema_at("properties", "training", "allOf")[1]["required"]) == fields
    for name, hint in typing.get_type_hints(TrainingConfig).items():
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        code = {JSON_TYPES[typing.get_origin(kind) or kind] for kind in (typing.get_args(hint) if union else (hint,))}
        declared = schema_at(*TRAINING, name)["type"]
        assert ({declared} if isinstance(declared, str) else set(declared)) == code, name


def test_null_patience_and_grad_clip_pass_as_the_code_takes_them() -> None:
    config = shipped_config()
    config["training"].update(patience=None, grad_clip=None)
    config["models"]["sfcn"]["training"] = {"patience": None}
    assert schema_error(config) is None
    check_config(config)


def test_a_number_yaml_reads_as_text_is_refused_naming_the_key() -> None:
    # YAML 1.1 needs a dot in a float: 1e-3 is the string "1e-3", which no job should see.
    config = shipped_config()
    update_config(config, yaml.safe_load("training: {lr: 1e-3}"))
    assert config["training"]["lr"] == "1e-3"
    message = schema_error(config) or "passed"
    assert "'1e-3' is not of type 'number'" in message and "On instance['training']['lr']" in message


@pytest.mark.parametrize(
    "device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "gpu", "CPU", "cuda:", "cuda:-1", "cuda:1 "]
)
def test_schema_accepts_the_devices_select_device_accepts(device: str, tmp_path: Path) -> None:
    try:
        select_device(device, lock_dir=tmp_path, timeout_s=0.0)
        code_accepts = True
    except ValueError:
        code_accepts = False
    except RuntimeError:  # a CUDA device asked for on a machine without one (or all GPUs claimed): a known name
        code_accepts = True
    config = shipped_config()
    config["training"]["device"] = device
    assert (schema_error(config) is None) == code_accepts


def test_smallest_synthetic_cohort_has_every_quirk_of_the_real_data() -> None:
    def quirks(n_subjects: int) -> set[str]:
        plan = plan_cohort(n_subjects, seed=0)
        found = set(plan["sheet_status"]) - {"ok"}
        found |= {"sheet_only"} if not plan["imaged"].all() else set()
        found |= {"no_mra"} if not plan.loc[plan["imaged"], "has_mra"].all() else set()
        return found

    every = {"zero_duplicate", "conflicting_age", "no_age", "absent", "sheet_only", "no_mra"}
    minimum = schema_at("properties", "synthetic", "properties", "n_subjects")["minimum"]
    assert quirks(minimum) == every
    assert quirks(minimum - 1) != every


def test_every_schema_key_has_a_description() -> None:
    def undocumented(node: dict, path: str) -> Iterator[str]:
        for name, child in node.get("properties", {}).items():
            where = f"{path}.{name}" if path else name
            if "description" not in child:
                yield where
            yield from undocumented(child, where)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from undocumented(node[key], path)
        for child in node.get("allOf", []):
            yield from undocumented(child, path)
        for name, child in node.get("$defs", {}).items():
            yield from undocumented(child, f"$defs.{name}")

    assert list(undocumented(schema(), "")) == []


@pytest.mark.parametrize(
    "overlay",
    [(), ("tiny.yaml",), ("ixi.yaml",), ("replicates.yaml",), ("crossval.yaml",)],
    ids=["default", "tiny", "ixi", "replicates", "crossval"],
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
