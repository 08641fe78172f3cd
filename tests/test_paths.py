"""The path builder: today's file names, wildcards kept for Snakemake, wrong entities refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from brainage.demographics import subject_id
from brainage.paths import IXI_IMAGE_NAME, IXI_SUBJECT, LAYOUTS, derived, ixi_archive, ixi_image
from brainage.vocabulary import RAW_SCANS, SITES


@pytest.mark.parametrize(
    ("stage", "entities", "expected"),
    [
        ("synthetic", {"name": "IXI"}, "results/synthetic/IXI"),
        ("synthetic", {"name": "IXI", "ext": ".xls"}, "results/synthetic/IXI.xls"),
        ("synthetic", {"subject": "IXI002"}, "results/synthetic/subjects/IXI002"),
        ("synthetic", {"subject": "IXI002", "ext": ".json"}, "results/synthetic/subjects/IXI002/IXI002.json"),
        (
            "preprocess",
            {"subject": "IXI002", "name": "TOF_reg_PD_bin", "ext": ".nii.gz"},
            "results/preprocess/IXI002/IXI002_TOF_reg_PD_bin.nii.gz",
        ),
        ("preprocess", {"subject": "IXI002", "channel": "TOF_bin"}, "results/preprocess/IXI002/tensors/TOF_bin.npy"),
        ("qc", {"subject": "IXI002", "ext": ".json"}, "results/qc/IXI002.json"),
        (
            "train",
            {"modality": "T1+TOF_bin", "model": "sfcn", "replicate": 2, "name": "model", "ext": ".pt"},
            "results/train/T1+TOF_bin/sfcn/replicate2/model.pt",
        ),
        (
            "train",
            {"modality": "T1", "model": "ridge", "name": "predictions", "ext": ".csv"},
            "results/train/T1/ridge/predictions.csv",
        ),
        (
            "checkpoints",
            {"modality": "T1", "model": "cnn3d", "replicate": 0, "name": "train_state", "ext": ".pt"},
            "results/checkpoints/T1/cnn3d/replicate0/train_state.pt",
        ),
        ("crossval", {"fold": 2, "name": "split", "ext": ".csv"}, "results/crossval/fold2/split.csv"),
        (
            "crossval",
            {"fold": 1, "modality": "TOF_bin", "model": "ridge", "name": "predictions", "ext": ".csv"},
            "results/crossval/fold1/TOF_bin/ridge/predictions.csv",
        ),
        ("attribution", {"name": "regions", "ext": ".nii.gz"}, "results/attribution/regions.nii.gz"),
        (
            "attribution",
            {"modality": "TOF_bin", "model": "cnn3d", "replicate": 0, "name": "regions", "ext": ".csv"},
            "results/attribution/TOF_bin/cnn3d/replicate0/regions.csv",
        ),
        (
            "attribution",
            {"modality": "T1", "model": "sfcn", "replicate": 0, "subject": "IXI002", "ext": ".nii.gz"},
            "results/attribution/T1/sfcn/replicate0/subjects/IXI002.nii.gz",
        ),
        ("logs", {"rule": "evaluate"}, "results/logs/evaluate.log"),
        ("logs", {"rule": "register", "subject": "IXI002"}, "results/logs/register/IXI002.log"),
        (
            "logs",
            {"rule": "train", "modality": "T1", "model": "sfcn", "replicate": 0},
            "results/logs/train/T1_sfcn_replicate0.log",
        ),
        ("benchmarks", {}, "results/benchmarks"),
        ("benchmarks", {"rule": "split"}, "results/benchmarks/split/all.tsv"),
        ("benchmarks", {"rule": "download_ixi", "name": "IXI.xls"}, "results/benchmarks/download_ixi/IXI.xls.tsv"),
    ],
)
def test_entities_give_todays_file_names(stage: str, entities: dict, expected: str) -> None:
    assert derived(stage, **entities) == Path(expected)


def test_wildcards_pass_through_for_snakemake_patterns() -> None:
    run = {"modality": "{modality}", "model": "{model}", "replicate": "{replicate}"}
    assert str(derived("train", **run, name="history", ext=".csv")) == (
        "results/train/{modality}/{model}/replicate{replicate}/history.csv"
    )
    pattern = derived("preprocess", subject="{subject}", name="PD", ext=".nii.gz")
    concrete = derived("preprocess", subject="IXI012", name="PD", ext=".nii.gz")
    assert str(pattern).format(subject="IXI012") == str(concrete)


def test_subject_attribution_maps_lie_in_the_folder_the_rule_declares() -> None:
    run = {"modality": "T1", "model": "cnn3d", "replicate": 0}
    assert derived("attribution", **run, subject="IXI002", ext=".nii.gz").parent == derived("attribution", **run)


def test_root_moves_the_whole_tree(tmp_path: Path) -> None:
    assert derived("split", name="split", ext=".csv", root=tmp_path) == tmp_path / "split" / "split.csv"


@pytest.mark.parametrize(
    ("stage", "entities", "message"),
    [
        ("qc", {"subject": "IXI002"}, r"no qc path has exactly the entities \['subject'\]; qc paths take: ext, subj"),
        ("preprocess", {"subject": "IXI002", "channel": "T1", "ext": ".npy"}, "channel, subject"),
        ("tensors", {"subject": "IXI002"}, "unknown stage 'tensors'"),
        ("qc", {"subject": "IXI002", "ext": "png"}, "must start with a dot"),
    ],
)
def test_a_path_the_layout_does_not_have_is_refused(stage: str, entities: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        derived(stage, **entities)


def test_every_template_of_a_stage_takes_its_own_entities() -> None:
    """The entities pick the template: two templates of one stage with the same fields would be ambiguous."""
    for stage, templates in LAYOUTS.items():
        derived_paths = set()
        for template in templates:
            entities = ("subject", "modality", "model", "replicate", "fold", "channel", "rule", "name")
            fields = {field: f"<{field}>" for field in entities if f"{{{field}}}" in template}
            if "{ext}" in template:
                fields["ext"] = ".x"
            path = derived(stage, **fields, root="r")
            assert path == Path("r") / template.format(**fields)
            derived_paths.add(path)
        assert len(derived_paths) == len(templates), stage


@pytest.mark.parametrize("scan", RAW_SCANS)
@pytest.mark.parametrize("site", SITES)
def test_ixi_image_names_parse_back_to_their_parts(scan: str, site: str) -> None:
    path = ixi_image("IXI012", site, 87, scan)
    assert path.parent.name == Path(ixi_archive(scan)).stem == f"IXI-{scan}"
    match = IXI_IMAGE_NAME.fullmatch(path.name)
    assert match is not None
    assert (match["subject"], match["site"], int(match["series"]), match["scan"]) == ("IXI012", site, 87, scan)


def test_ixi_subject_pattern_matches_the_ids_the_package_makes() -> None:
    assert re.fullmatch(IXI_SUBJECT, subject_id(2)) and re.fullmatch(IXI_SUBJECT, subject_id(999))
    assert not re.fullmatch(IXI_SUBJECT, "IXI1000") and not re.fullmatch(IXI_SUBJECT, "sub-01")


def test_ixi_image_name_refuses_other_scans_and_sites() -> None:
    assert IXI_IMAGE_NAME.fullmatch("IXI012-Guys-0087-T2.nii.gz") is None
    assert IXI_IMAGE_NAME.fullmatch("IXI012-Mars-0087-T1.nii.gz") is None
