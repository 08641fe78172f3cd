"""Cached-array dataset, torchio augmentation by channel type, reproducible loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchio as tio

from brainage.data import (
    AgeDataset,
    FastRandomBiasField,
    build_transforms,
    make_loader,
    polynomial_bias_field,
)

torch.set_num_threads(1)

SHAPE = (16, 20, 16)
FULL_SPEC = [
    {"name": "RandomAffine", "scales": 0.05, "degrees": 5, "translation": 2, "p": 1.0},
    {"name": "RandomFlip", "axes": ["LR"]},
    {"name": "RandomBiasField", "coefficients": 0.3, "p": 1.0},
    {"name": "RandomNoise", "std": 0.05, "p": 1.0},
    {"name": "RandomGamma", "log_gamma": [-0.2, 0.2], "p": 1.0},
]


def make_cohort(root: Path, n: int = 12) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Subjects whose T1 is filled with their number (to check the join) and a binary TOF mask.

    The manifest index is shuffled and not 0..n-1; the split lists subjects in another order.
    """
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        subject = f"IXI{i:03d}"
        t1 = np.full(SHAPE, i, dtype=np.float16) + rng.normal(0, 0.1, SHAPE).astype(np.float16)
        mask = (rng.random(SHAPE) > 0.7).astype(np.uint8)
        np.save(root / f"{subject}_T1.npy", t1)
        np.save(root / f"{subject}_TOF_bin.npy", mask)
        rows.append(
            {
                "subject": subject,
                "age": 20.0 + i,
                "sex": "F",
                "site": "Guys",
                "tensor_T1": str(root / f"{subject}_T1.npy"),
                "tensor_TOF_bin": str(root / f"{subject}_TOF_bin.npy"),
            }
        )
    manifest = pd.DataFrame(rows, index=rng.permutation(n) + 100).sample(frac=1, random_state=1)
    sets = ["train"] * (n // 2) + ["tune"] * (n // 4) + ["eval"] * (n - n // 2 - n // 4)
    split = pd.DataFrame({"subject": [r["subject"] for r in rows], "set": sets, "age": [r["age"] for r in rows]})
    return manifest, split.sample(frac=1, random_state=2)


def test_subset_is_selected_and_joined_by_subject_id(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    dataset = AgeDataset(manifest, split, "tune", ["T1", "TOF_bin"])
    expected = set(split.loc[split["set"] == "tune", "subject"])
    assert set(dataset.subjects) == expected
    for index in range(len(dataset)):
        image, age, subject = dataset[index]
        number = int(subject[3:])
        assert image.shape == (2, *SHAPE) and image.dtype == torch.float32
        assert age.dtype == torch.float32 and age.item() == 20.0 + number
        assert abs(image[0].mean().item() - number) < 0.05  # the T1 written for this subject
        assert set(image[1].unique().tolist()) <= {0.0, 1.0}


def test_missing_subject_or_column_is_named(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    lost = split.loc[split["set"] == "eval", "subject"].iloc[0]
    with pytest.raises(ValueError, match=lost):
        AgeDataset(manifest[manifest["subject"] != lost], split, "eval", ["T1"])
    with pytest.raises(ValueError, match="tensor_TOF"):
        AgeDataset(manifest, split, "eval", ["TOF"])
    with pytest.raises(ValueError, match="valid subsets"):
        AgeDataset(manifest, split, "test", ["T1"])


def test_unknown_or_malformed_transform_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"allowed: .*RandomAffine"):
        build_transforms([{"name": "RandomSwirl"}], [])
    with pytest.raises(ValueError, match="RandomNoise"):
        build_transforms([{"name": "RandomNoise", "sigma": 2}], [])
    assert build_transforms([], []) is None


def test_augmentation_keeps_binary_channels_binary_and_spares_them_intensity_changes(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    transform = build_transforms(FULL_SPEC, ["TOF_bin"])
    dataset = AgeDataset(manifest, split, "train", ["T1", "TOF_bin"], transform)
    plain = AgeDataset(manifest, split, "train", ["T1", "TOF_bin"])
    for index in range(4):
        image, _, _ = dataset[(index, index)]
        original, _, _ = plain[index]
        assert set(image[1].unique().tolist()) <= {0.0, 1.0}
        assert image[1].sum() > 0
        assert not torch.allclose(image[0], original[0])


def test_all_channels_share_the_spatial_transform(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    # Identical content in both channels: a shared flip keeps them identical.
    for subject_row in manifest.itertuples():
        mask = np.load(subject_row.tensor_TOF_bin)
        np.save(subject_row.tensor_T1, mask.astype(np.float16))
    transform = build_transforms([{"name": "RandomFlip", "axes": ["LR"], "flip_probability": 1.0}], ["TOF_bin"])
    image, _, _ = AgeDataset(manifest, split, "train", ["T1", "TOF_bin"], transform)[(0, 0)]
    original, _, _ = AgeDataset(manifest, split, "train", ["T1", "TOF_bin"])[0]
    assert torch.equal(image[0], image[1])
    assert torch.equal(image[1], original[1].flip(0))  # LR is axis 0 of an RAS image


def test_affine_fills_voxels_from_outside_the_grid_with_the_background_zero() -> None:
    """torchio's default fills them with each image's minimum: about -3 for a z-scored brain,
    a band that moved HighRes3DNet's pooled features by tens of between-subject SDs."""
    image = torch.full((1, *SHAPE), 2.0)
    image[:, 4:12, 5:15, 4:12] = -3.0  # the z-scored "brain" holds the minimum
    transform = build_transforms(
        [{"name": "RandomAffine", "scales": 0, "degrees": 0, "translation": [5, 5, 0, 0, 0, 0], "p": 1.0}], []
    )
    moved = transform({"T1": image.clone()})["T1"][0]
    # A 5-voxel shift along the first axis: the first voxels come from outside the grid.
    assert torch.all(moved[:4] == 0.0)
    assert torch.all(moved[6:] != 0.0)


def _first_batches(loader: torch.utils.data.DataLoader, count: int) -> list[torch.Tensor]:
    batches = []
    for _ in range(count):  # one batch from each of `count` epochs
        images, _, _ = next(iter(loader))
        batches.append(images)
    return batches


def test_same_seed_gives_the_same_augmented_batches_whatever_the_workers(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    dataset = AgeDataset(manifest, split, "train", ["T1", "TOF_bin"], build_transforms(FULL_SPEC, ["TOF_bin"]))
    first = _first_batches(make_loader(dataset, 3, True, 0, seed=5, device_type="cpu"), 2)
    again = _first_batches(make_loader(dataset, 3, True, 0, seed=5, device_type="cpu"), 2)
    threaded = _first_batches(make_loader(dataset, 3, True, 2, seed=5, device_type="cpu"), 2)
    other = _first_batches(make_loader(dataset, 3, True, 0, seed=6, device_type="cpu"), 2)
    for a, b, c in zip(first, again, threaded, strict=True):
        assert torch.equal(a, b)
        assert torch.equal(a, c)
    assert not torch.equal(first[0], first[1])  # epochs differ
    assert not torch.equal(first[0], other[0])


def test_loader_options_follow_device_and_workers(tmp_path: Path) -> None:
    manifest, split = make_cohort(tmp_path)
    dataset = AgeDataset(manifest, split, "eval", ["T1"])
    loader = make_loader(dataset, 2, False, 0, seed=0, device_type="cpu")
    assert not loader.pin_memory and not loader.persistent_workers
    subjects = [s for _, _, batch in loader for s in batch]
    assert subjects == dataset.subjects  # no shuffling
    assert make_loader(dataset, 2, False, 1, seed=0, device_type="cuda").pin_memory


# The fast bias field against torchio's own (odd, even and length-1 axes; orders 0 to 4).
@pytest.mark.parametrize("shape", [(16, 20, 16), (7, 10, 5), (1, 4, 3), (9, 9, 9)])
@pytest.mark.parametrize("order", [0, 1, 3, 4])
def test_fast_bias_field_equals_torchio_for_fixed_coefficients(shape: tuple[int, int, int], order: int) -> None:
    count = len(tio.RandomBiasField(coefficients=0.5, order=order).get_params(order, (-0.5, 0.5)))
    coefficients = np.random.default_rng(order).uniform(-0.5, 0.5, count).tolist()
    expected = tio.BiasField.generate_bias_field(torch.zeros((1, *shape)), order, coefficients)
    field = polynomial_bias_field(shape, order, coefficients)
    assert field.dtype == expected.dtype == np.float32 and field.shape == expected.shape
    np.testing.assert_allclose(field, expected, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="coefficients"):
        polynomial_bias_field(shape, order, [*coefficients, 0.1])


def _bias_subject(shape: tuple[int, int, int] = (12, 14, 10)) -> tio.Subject:
    rng = np.random.default_rng(3)
    return tio.Subject(
        T1=tio.ScalarImage(
            tensor=torch.from_numpy(rng.uniform(0.5, 1.5, (1, *shape)).astype(np.float32)), affine=np.eye(4)
        ),
        TOF=tio.ScalarImage(tensor=torch.ones((1, *shape)), affine=np.eye(4)),
        TOF_bin=tio.LabelMap(
            tensor=torch.from_numpy((rng.random((1, *shape)) > 0.7).astype(np.float32)), affine=np.eye(4)
        ),
    )


def test_fast_random_bias_field_draws_like_torchio_and_spares_binary_channels() -> None:
    """Same seed, same draws (probability, one coefficient set per ScalarImage), same output."""
    for seed in range(20):
        outputs = []
        for transform in (FastRandomBiasField(coefficients=0.3, p=0.5), tio.RandomBiasField(coefficients=0.3, p=0.5)):
            torch.manual_seed(seed)
            subject = _bias_subject()
            outputs.append(transform(subject))
            assert torch.equal(outputs[-1]["TOF_bin"].data, subject["TOF_bin"].data)
        fast, reference = outputs
        for name in ("T1", "TOF"):
            torch.testing.assert_close(fast[name].data, reference[name].data, rtol=1e-6, atol=0)
        assert torch.equal(fast["TOF_bin"].data, _bias_subject()["TOF_bin"].data)
    # Each continuous channel gets its own field, as in torchio.
    torch.manual_seed(0)
    applied = FastRandomBiasField(coefficients=0.3, p=1.0)(_bias_subject())
    assert not torch.allclose(applied["TOF"].data, applied["T1"].data / _bias_subject()["T1"].data)


def test_fast_random_bias_field_statistics_match_torchio_over_independent_draws() -> None:
    """Independent streams (different seeds): the log-field's distribution agrees."""
    shape = (10, 12, 8)

    def log_fields(transform: tio.Transform, seed: int, draws: int = 300) -> np.ndarray:
        torch.manual_seed(seed)
        fields = [
            transform(tio.Subject(T1=tio.ScalarImage(tensor=torch.ones((1, *shape)), affine=np.eye(4))))[
                "T1"
            ].data.numpy()
            for _ in range(draws)
        ]
        return np.log(np.stack(fields))

    fast = log_fields(FastRandomBiasField(coefficients=0.3, p=1.0), seed=1)
    reference = log_fields(tio.RandomBiasField(coefficients=0.3, p=1.0), seed=2)
    # Per-draw summaries (a draw's voxels are strongly correlated; draws are independent).
    for summary in (np.mean, np.std, np.min, np.max):
        a = summary(fast.reshape(len(fast), -1), axis=1)
        b = summary(reference.reshape(len(reference), -1), axis=1)
        scale = np.sqrt((a.var() + b.var()) / len(a))
        assert abs(a.mean() - b.mean()) < 4 * scale, summary.__name__
        assert 0.8 < a.std() / b.std() < 1.25, summary.__name__
    quantiles = [0.01, 0.1, 0.5, 0.9, 0.99]
    np.testing.assert_allclose(np.quantile(fast, quantiles), np.quantile(reference, quantiles), atol=0.08)


def test_config_name_random_bias_field_builds_the_fast_transform() -> None:
    transform = build_transforms([{"name": "RandomBiasField", "coefficients": 0.3, "p": 0.3}], [])
    (bias,) = transform.pipeline.transforms
    assert isinstance(bias, FastRandomBiasField) and isinstance(bias, tio.RandomBiasField)
    assert bias.coefficients_range == (-0.3, 0.3) and bias.order == 3 and bias.probability == 0.3


def test_pipeline_without_copies_gives_torchio_copying_results() -> None:
    """build_transforms skips torchio's deep copies; the draws and outputs are unchanged."""
    rng = np.random.default_rng(4)
    t1 = torch.from_numpy(rng.uniform(0.5, 1.5, (1, *SHAPE)).astype(np.float32))
    mask = torch.from_numpy((rng.random((1, *SHAPE)) > 0.7).astype(np.float32))
    fast = build_transforms(FULL_SPEC, ["TOF_bin"])
    copying = build_transforms([{**entry, "copy": True} for entry in FULL_SPEC], ["TOF_bin"])
    copying.pipeline = tio.Compose(copying.pipeline.transforms, copy=True)
    for seed in range(5):
        torch.manual_seed(seed)
        a = fast({"T1": t1.clone(), "TOF_bin": mask.clone()})
        torch.manual_seed(seed)
        b = copying({"T1": t1.clone(), "TOF_bin": mask.clone()})
        for name in ("T1", "TOF_bin"):
            assert torch.equal(a[name], b[name])
