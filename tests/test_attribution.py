"""Attribution maps: a toy signal in a known box is found from the average training image,
randomized weights are told apart from another training, the generator's truth regions lie
where the generator ages the anatomy, and one run's files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from brainage.attribution import (
    REGION_COLUMNS,
    AttributionOutputs,
    RegionOutputs,
    age_tertiles,
    attribute_run,
    attribution_shares,
    completeness_errors,
    group_mean,
    integrated_gradients,
    randomization_correlations,
    read_training_means,
    spread_by_age,
    study_regions,
    truth_regions,
    young_old_difference,
)
from brainage.tensors import training_grid
from brainage.vocabulary import EVAL, T1, TOF_BIN, TRAIN
from test_train import SHAPE, make_cohort, run

torch.set_num_threads(1)

# An 8³ toy volume with the age signal in one 4³ corner box: an eighth of the volume.
TOY_SHAPE = (8, 8, 8)
BOX = (slice(4, 8), slice(0, 4), slice(4, 8))


def toy_images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Noise images whose box holds the standardized age: (N, 1, 8, 8, 8) and the targets."""
    generator = torch.Generator().manual_seed(seed)
    ages = 20 + 60 * torch.rand(n, generator=generator)
    target = (ages - 50) / 17
    images = torch.randn(n, 1, *TOY_SHAPE, generator=generator)
    images[(slice(None), 0, *BOX)] = target[:, None, None, None] + 0.1 * torch.randn(n, 4, 4, 4, generator=generator)
    return images, target


def toy_model(seed: int, kernel: int = 1, width: int = 4) -> nn.Module:
    """``width`` features per voxel, averaged over the eight 4³ blocks, a linear head: it can tell blocks apart.

    With ``kernel`` 1 a voxel's features are its own, so a trained model's attribution stays in
    the box. With 3 they reach the neighbours, so random weights vary from voxel to voxel as a
    real network's do, not only from block to block.
    """
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, width, kernel, padding=kernel // 2),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(2),
        nn.Flatten(),
        nn.Linear(8 * width, 1),
        nn.Flatten(0),
    )


def train_toy(seed: int, **architecture: int) -> nn.Module:
    """A toy model fitted to 256 training images (seed 0) from initial weights drawn with ``seed``."""
    images, target = toy_images(256, seed=0)
    model = toy_model(seed, **architecture)
    steps = 300
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        loss = ((model(images) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained_toy() -> nn.Module:
    return train_toy(seed=0)


def toy_baseline() -> Tensor:
    """The average training image: the baseline the workflow uses (brainage.attribution.training_means)."""
    return toy_images(256, seed=0)[0].mean(dim=0)


def box_mask() -> np.ndarray:
    box = np.zeros(TOY_SHAPE, dtype=bool)
    box[BOX] = True
    return box


def test_a_model_trained_on_a_box_gets_most_of_its_attribution_there(trained_toy: nn.Module) -> None:
    images, target = toy_images(16, seed=1)
    with torch.no_grad():
        assert float((trained_toy(images) - target).abs().mean()) < 0.15  # it learned the box: < 2.5 years
    signed, changes = integrated_gradients(trained_toy, images, toy_baseline(), steps=16, batch_size=8)
    assert signed.shape == images.shape
    # Completeness: the attributions add up to the prediction's difference from the average image's.
    assert np.median(completeness_errors(signed, changes)) < 0.02 * np.median(np.abs(changes))
    maps = attribution_shares(signed)
    assert np.allclose(maps.sum(axis=(1, 2, 3, 4)), 1.0, atol=1e-4)
    box = box_mask()
    assert box.mean() == 0.125
    assert group_mean(maps)[0][box].sum() > 0.6
    again, _ = integrated_gradients(trained_toy, images, toy_baseline(), steps=16, batch_size=8)
    assert np.array_equal(again, signed)


def test_randomized_weights_are_told_apart_from_another_training() -> None:
    """Adebayo et al.'s check, on the toy whose features reach the neighbours: with 1×1 features a
    random model's gradient takes a handful of values per block and matches a trained one's signs
    by chance (-0.26 to 0.33 over seven draws). Signed attributions, as the workflow compares:
    absolute ones of random weights would correlate at 0.35-0.46, and fail."""
    images, _ = toy_images(16, seed=1)
    baseline = toy_baseline()
    spatial = {"kernel": 3, "width": 8}

    def attributions(model: nn.Module) -> np.ndarray:
        return integrated_gradients(model, images, baseline, steps=16, batch_size=8)[0]

    trained = attributions(train_toy(seed=0, **spatial))

    def correlation(other: np.ndarray) -> float:
        return float(randomization_correlations(trained, other, images.numpy(), baseline.numpy())[0])

    assert correlation(trained) == pytest.approx(1.0)
    # Another training from other initial weights attributes alike (0.68); random weights do not (-0.06 to 0.18).
    assert correlation(attributions(train_toy(seed=1, **spatial))) > 0.5
    for seed in range(1, 6):
        assert abs(correlation(attributions(toy_model(seed, **spatial).eval()))) < 0.3


def test_attribution_lies_where_a_subject_differs_from_the_baseline() -> None:
    """A linear model's Integrated Gradients are (x - baseline) × weight at any number of steps:
    a voxel equal to the average gets nothing, a vessel the subject lacks and the average has does."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 1), nn.Flatten(0))
    baseline = torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 0.25, 0.0]).reshape(1, 2, 2, 2)
    images = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]])
    images = images.reshape(2, 1, 2, 2, 2)
    expected = ((images - baseline).flatten(1) * model[1].weight.detach()).numpy()
    for steps in (1, 4):
        signed, changes = integrated_gradients(model, images, baseline, steps=steps)
        assert np.allclose(signed.reshape(2, -1), expected, atol=1e-6)
        assert np.allclose(completeness_errors(signed, changes), 0.0, atol=1e-5)
    assert signed[0, 0, 1, 0, 0] == 0.0  # a vessel the subject shares with every training subject: nothing
    assert signed[1, 0, 0, 1, 1] != 0.0  # 0 where the average is 0.5: an absent vessel counts


def test_young_old_difference_compares_the_outer_age_tertiles() -> None:
    ages = np.array([20.0, 80.0, 30.0, 70.0, 50.0, 60.0])
    young, old = age_tertiles(ages)
    assert young.tolist() == [True, False, True, False, False, False]
    assert old.tolist() == [False, True, False, True, False, False]
    maps = ages[:, None, None, None, None] * np.ones((6, 1, 2, 2, 2))
    assert np.allclose(young_old_difference(maps, ages), 75.0 - 25.0)
    assert sorted(ages[spread_by_age(ages, 3)]) == [20.0, 50.0, 80.0]


def test_generator_truth_lies_where_the_generator_ages_the_anatomy() -> None:
    shape = (24, 28, 24)
    affine = training_grid(shape, 6.5)
    regions = {region.name: region.weights for region in truth_regions(affine, shape, 20.0, 85.0, 0.25, seed=0)}
    assert set(regions) == {"ventricles", "cortex and sulci", "arterial tree", "pruned branches"}

    def centre_distance_mm(weights: np.ndarray) -> float:
        """Weighted mean distance from the lateral ventricles' centre (template mm)."""
        points = np.argwhere(np.ones(shape, dtype=bool)) @ affine[:3, :3].T + affine[:3, 3]
        distance = np.linalg.norm(points - np.array([0.0, -15.0, 15.0]), axis=1)
        return float((distance * weights.ravel()).sum() / weights.sum())

    # The lateral ventricles reach about 40 mm forward and back from their centre; the cortex lies beyond 60.
    assert centre_distance_mm(regions["ventricles"]) < 40 < 60 < centre_distance_mm(regions["cortex and sulci"])
    assert 50 < regions["arterial tree"].sum() < 0.05 * regions["arterial tree"].size
    # Age prunes the distal branches: young trees reach voxels old ones rarely do, not the reverse.
    pruned = regions["pruned branches"]
    assert pruned.min() >= 0.0 and pruned.max() <= 1.0 and 10 < pruned.sum() < regions["arterial tree"].sum()
    assert (pruned > 0.25).sum() > 20


def write_atlas(folder: Path) -> tuple[Path, Path]:
    """A two-label atlas in template space at 4 mm: the left and the right hemisphere."""
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = (-100.0, -130.0, -80.0)
    labels = np.zeros((50, 60, 50), dtype=np.uint8)
    labels[5:25, 10:50, 10:40] = 1
    labels[25:45, 10:50, 10:40] = 2
    image, table = folder / "atlas.nii.gz", folder / "atlas.tsv"
    nib.save(nib.Nifti1Image(labels, affine), image)
    pd.DataFrame({"index": [1, 2], "name": ["left", "right"]}).to_csv(table, sep="\t", index=False)
    return image, table


def test_one_run_writes_its_maps_table_and_figure(tmp_path: Path) -> None:
    cohort_dir = tmp_path / "cohort"
    cohort_dir.mkdir()
    manifest, split = make_cohort(cohort_dir, n=20)
    # The training means cover every channel; the cohort's T1 stands in for its TOF.
    manifest = manifest.assign(tensor_TOF=manifest["tensor_T1"])
    run(tmp_path, (manifest, split), training={"epochs": 1, "batch_size": 4, "lr": 3e-3})
    image, labels = write_atlas(tmp_path)
    grid = {"shape": list(SHAPE), "spacing": 8.0}
    regions = RegionOutputs(tmp_path / "regions.nii.gz", tmp_path / "regions.csv", tmp_path / "means.nii.gz")
    region_table = study_regions(
        manifest, split, grid, True, regions, atlas={"image": str(image), "labels": str(labels)}
    )
    assert region_table["region"].tolist() == ["GM", "WM", "CSF", "vessels", "left", "right"]
    assert region_table.loc[region_table["region"].isin(["GM", "WM", "CSF"]), "volume_share"].sum() <= 1.0
    means = read_training_means(regions.means)
    # The baseline of a T1+TOF_bin run: the mean training T1 and the mean training vessel mask.
    train_paths = manifest.set_index("subject").loc[split.loc[split["set"] == TRAIN, "subject"]]
    baseline = means.baseline([T1, TOF_BIN]).numpy()
    for channel, mean in zip((T1, TOF_BIN), baseline, strict=True):
        expected = np.mean([np.load(path).astype(np.float32) for path in train_paths[f"tensor_{channel}"]], axis=0)
        assert np.allclose(mean, expected, atol=1e-5)

    eval_subjects = split.loc[split["set"] == EVAL, "subject"].tolist()
    outputs = AttributionOutputs(
        tmp_path / "run" / "mean_attribution.nii.gz",
        tmp_path / "run" / "enrichment.csv",
        tmp_path / "run" / "attribution.png",
        {subject: tmp_path / "run" / "subjects" / f"{subject}.nii.gz" for subject in eval_subjects},
    )
    settings = {"steps": 4, "subject_maps": True, "atlas": None}
    lines: list[str] = []
    table = attribute_run(
        tmp_path / "out" / "model.pt",
        manifest,
        split,
        ("T1+TOF_bin", "cnn3d", 0),
        settings,
        regions,
        outputs,
        batch_size=4,
        seed=3,
        log=lines.append,
    )
    assert any("completeness error" in line for line in lines)
    assert tuple(table.columns) == REGION_COLUMNS
    assert len(table) == 2 * len(region_table)
    assert table.groupby("channel")["channel_share"].first().sum() == pytest.approx(1.0)
    assert table["attribution_share"].between(0, 1).all() and table["randomized_rank_correlation"].notna().all()
    mean_map = nib.load(outputs.mean_map)
    assert mean_map.shape == (*SHAPE, 2) and np.allclose(mean_map.affine, training_grid(SHAPE, 8.0))
    assert np.asarray(mean_map.dataobj).sum() == pytest.approx(1.0, abs=1e-4)
    assert all(nib.load(path).shape == (*SHAPE, 2) for path in outputs.subject_maps.values())
    assert outputs.figure.stat().st_size > 0
    pd.testing.assert_frame_equal(pd.read_csv(outputs.table), table, check_dtype=False, atol=1e-5)
