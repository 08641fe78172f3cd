"""The training manifest: joining inventory, QC and tensors, and dropping QC failures with reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainage.manifest import ManifestError, build_manifest

BOUNDS = {"nmi_T1": 0.4, "nmi_TOF": 0.3}


def inventory() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject": ["IXI012", "IXI002", "IXI013", "IXI014", "IXI099"],
            "site": ["HH", "Guys", "HH", "IOP", "HH"],
            "sex": ["F", "M", "M", "F", np.nan],
            "age": [40.25, 35.5, 61.0, 50.0, np.nan],
            "included": [True, True, True, True, False],
            "reason": ["", "", "", "", "absent from the demographics sheet"],
        },
        index=[7, 3, 9, 1, 4],
    )


def qc() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject": ["IXI002", "IXI012", "IXI013", "IXI014", "IXI500"],
            "nmi_T1": [0.55, 0.61, 0.35, 0.50, 0.9],
            "nmi_TOF": [0.42, 0.40, 0.20, np.nan, 0.9],
            "mask_volume_ml": [1450.0, 1320.5, 1500.0, 1400.0, 1.0],
        }
    )


def tensors(subjects: tuple[str, ...] = ("IXI002", "IXI012")) -> dict[str, dict[str, str]]:
    return {s: {c: f"/t/{s}_{c}.npy" for c in ["TOF_bin", "T1", "TOF"]} for s in subjects}


def test_manifest_columns_rows_and_exclusions() -> None:
    manifest, exclusions = build_manifest(inventory(), qc(), tensors(), BOUNDS)
    assert list(manifest.columns) == [
        "subject",
        "site",
        "sex",
        "age",
        "tensor_T1",
        "tensor_TOF",
        "tensor_TOF_bin",
        "nmi_T1",
        "nmi_TOF",
        "mask_volume_ml",
    ]
    assert manifest["subject"].tolist() == ["IXI002", "IXI012"]
    assert manifest.index.tolist() == [0, 1]
    first = manifest.iloc[0]
    assert (first["site"], first["sex"], first["age"]) == ("Guys", "M", 35.5)
    assert first["tensor_TOF_bin"] == "/t/IXI002_TOF_bin.npy" and first["mask_volume_ml"] == 1450.0
    assert list(exclusions.columns) == ["subject", "reason"]
    assert dict(zip(exclusions["subject"], exclusions["reason"], strict=True)) == {
        "IXI013": "QC nmi_T1 = 0.35 is below the minimum 0.4; QC nmi_TOF = 0.2 is below the minimum 0.3",
        "IXI014": "QC nmi_TOF is missing (minimum 0.3)",
    }


def test_value_at_the_bound_passes() -> None:
    table = qc()
    table.loc[table["subject"] == "IXI013", ["nmi_T1", "nmi_TOF"]] = [0.4, 0.3]
    manifest, exclusions = build_manifest(inventory(), table, tensors(("IXI002", "IXI012", "IXI013")), BOUNDS)
    assert "IXI013" in set(manifest["subject"]) and exclusions["subject"].tolist() == ["IXI014"]


def test_no_bounds_keeps_everyone() -> None:
    manifest, exclusions = build_manifest(inventory(), qc(), tensors(("IXI002", "IXI012", "IXI013", "IXI014")), {})
    assert manifest["subject"].tolist() == ["IXI002", "IXI012", "IXI013", "IXI014"] and exclusions.empty


def test_missing_qc_record_names_subject() -> None:
    with pytest.raises(ManifestError, match="no QC record for included subject\\(s\\): IXI013"):
        build_manifest(inventory(), qc()[qc()["subject"] != "IXI013"], tensors(), BOUNDS)


def test_unknown_qc_metric_names_it() -> None:
    with pytest.raises(ManifestError, match=r"metric\(s\) not in the QC table: \['snr'\]"):
        build_manifest(inventory(), qc(), tensors(), {"snr": 10.0})


def test_missing_tensor_names_subject_and_channel() -> None:
    paths = tensors()
    del paths["IXI012"]["TOF"]
    with pytest.raises(ManifestError, match=r"subject IXI012: no tensor for channel\(s\) TOF"):
        build_manifest(inventory(), qc(), paths, BOUNDS)


def test_duplicate_qc_rows_refused() -> None:
    with pytest.raises(ManifestError, match="more than one row for subject\\(s\\): IXI002"):
        build_manifest(inventory(), pd.concat([qc(), qc().iloc[:1]]), tensors(), BOUNDS)
