"""Where a trained run looks: attribution maps of its eval predictions and their regional summary.

Method. Integrated Gradients (Sundararajan et al. 2017; ``captum.attr.IntegratedGradients``):
the attribution of a voxel is its difference from a baseline image times the gradient of the
predicted age averaged along the straight path from the baseline to the subject's image. Chosen
because its attributions add up to the prediction's difference from the baseline's
(completeness, so a share of attribution is a share of that difference), it is deterministic
(SmoothGrad draws noise, so two runs of one model would differ) and it costs ``steps`` gradient
passes per subject, where Occlusion costs one forward pass per patch position and needs a patch
size chosen per grid. ``steps: 1`` is the one-pass approximation: the gradient midway between
the baseline and the image, times their difference.

Baseline: the average training subject, per channel the voxelwise mean of the training
subjects' arrays (:func:`training_means`). A subject's map then explains how its predicted age
differs from the average brain's, and a voxel gets attribution wherever the subject differs from
the average: a vessel the average lacks and a branch the average has and the subject lost alike,
wider or narrower ventricles alike. The arrays' background 0, the usual baseline, gives nothing
to a voxel whose input is 0 and makes every map scale with the raw input: a vessel mask's
attribution then lies on the subject's own vessels whatever the weights (demo runs with the
vessel mask: vessel-region enrichment 7.5-9.3 trained, 7.8-8.5 with random weights).

Magnitude, not sign, in the maps. A voxel's signed attribution says which way it moves the
prediction away from the average brain's: wide ventricles push an old subject's age up, narrow
ones push a young subject's down, so signed maps cancel in a group mean. Each subject's
``|attribution|`` is divided by its sum over voxels and channels: a map is the share of the
subject's attribution in each voxel, and every subject weighs the same in the group mean and in
the young-old difference.

Steps. Gauss-Legendre quadrature (captum's default). Each job logs the completeness error, the
gap in years between a subject's summed attributions and ``f(x) - f(baseline)``. Measured on
the demo's trained cnn3d (T1, TOF_bin), SFCN (TOF_bin) and HighRes3DNet (T1) runs, 10 eval
subjects whose ``f(x) - f(baseline)`` has a median of 6-18 years: group-mean maps at 8 steps
rank voxels as 32-step maps do (Spearman 0.999 or more); the median error is 0.06-0.27 years at
8 steps (largest 2.9) and 0.02-0.08 at 16 (largest 0.5); one step ranks them at 0.97-0.99 with a
median error of 0.7-3.9 years.

Regions (each a weight in [0, 1] per grid voxel, so partial volumes stay fractions): the MNI152
tissue classes of :mod:`brainage.templates` (template space only), the vessel region (voxels
where the mean vessel fraction of the training subjects reaches :data:`VESSEL_FREQUENCY`), an
optional labelled atlas, and on synthetic data the generator's truth: where the anatomy turns
into CSF between the youngest and the oldest eval age (around the ventricles, and elsewhere:
the cortical rim and sulci), where the arterial tree runs and which of its branches age prunes
(:mod:`brainage.synth`). A
region's enrichment is its share of a channel's attribution over its share of the brain's
volume; 1 is what an attribution spread evenly over the brain gives.

Sanity check (Adebayo et al. 2018): the same architecture with fresh random weights is
attributed from the same baseline for :data:`RANDOMIZED_SUBJECTS` eval subjects spread over the
ages (enough for a group mean; every subject would double the cost). The table gives the
randomized model's enrichments beside the trained one's, and per channel the median over these
subjects of the Spearman rank correlation between the two models' signed attributions of the
subject, over the voxels where it differs from the baseline (elsewhere both are 0). Signed,
because a magnitude is ``|x - baseline|`` times a gradient and so carries the subject's
difference from the baseline whatever the weights. Measured on the demo's replicates 0 and 1
(cnn3d, SFCN, HighRes3DNet; T1 and TOF_bin): another training's signed maps correlate with the
first's at 0.14-0.34, random weights' at -0.02 to 0.03, while magnitudes do not tell the two
apart (0.43-0.74 against 0.54-0.70). Per subject, because signed maps cancel in a group mean.

Cost. The regions and the training means do not depend on the run: :func:`study_regions`
computes them once per study (rule ``attribution_regions``) and every run's job
(:func:`attribute_run`) reads them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients
from scipy import ndimage, stats
from torch import Tensor, nn

from brainage import plots
from brainage.data import AgeDataset
from brainage.device import job_device
from brainage.io import load_image, read_table, save_image, write_table
from brainage.models import build_model, load_trained_model
from brainage.synth.ageing import age_effects
from brainage.synth.anatomy import template_anatomy, working_step
from brainage.synth.seeding import random_stream
from brainage.synth.tissue import CONTRAST, render_tissue
from brainage.synth.vessels import vessel_tree
from brainage.templates import TEMPLATE_GM, TEMPLATE_T1, TEMPLATE_WM, template_path
from brainage.tensors import block_average, coverage, training_grid
from brainage.vocabulary import CHANNELS, EVAL, T1, TOF_BIN, TRAIN

# Mean vessel fraction of the training subjects (for whole-voxel masks, the share of them with a
# vessel) that puts a voxel in the vessel region: on the demo grid about as many voxels as one
# subject's mask (477 against 424). Also the share of the generator's trees for the arterial tree.
VESSEL_FREQUENCY = 0.25
# Eval subjects the randomized model is attributed for: enough for a group mean and a median.
RANDOMIZED_SUBJECTS = 10
# Random arterial trees drawn for the generator's vessel truth: at ages spread over the eval range
# for the tree, and as many at the youngest and at the oldest age for the pruned branches.
TRUTH_TREES = 16
# Each grid voxel's truth fractions are averaged over this many sub-voxels per axis.
TRUTH_SUPERSAMPLING = 3
# Region kinds, in the table's order.
TEMPLATE, DATA, ATLAS, TRUTH = "template", "data", "atlas", "truth"
REGION_COLUMNS = (
    "modality",
    "model",
    "replicate",
    "channel",
    "region",
    "kind",
    "volume_share",
    "attribution_share",
    "enrichment",
    "randomized_attribution_share",
    "randomized_enrichment",
    "channel_share",
    "randomized_rank_correlation",
)


@dataclasses.dataclass(frozen=True)
class AttributionSettings:
    """The config's ``attribution`` section; tests/test_config.py pins the schema's keys to these fields."""

    steps: int = 16  # integration steps (Gauss-Legendre); 1 is the one-pass midpoint approximation
    subject_maps: bool = False  # also write every eval subject's map
    atlas: dict[str, str] | None = None  # {"image": labelled NIfTI in template space, "labels": table}


@dataclasses.dataclass(frozen=True)
class AttributionOutputs:
    """The files :func:`attribute_run` writes; the rule ``attribution`` names them."""

    mean_map: Path  # NIfTI (X, Y, Z, channel): group mean of the eval subjects' maps, on the training grid
    table: Path  # CSV, one row per channel and region: REGION_COLUMNS
    figure: Path  # PNG: the mean map and the old-minus-young difference, per channel
    # Eval subject -> its map as a NIfTI like mean_map (subject_maps: true), else None.
    subject_maps: Mapping[str, Path] | None = None


@dataclasses.dataclass(frozen=True)
class Region:
    """A region on the training grid: ``weights`` is the fraction of each voxel inside it."""

    name: str
    kind: str
    weights: np.ndarray


# --- attribution ------------------------------------------------------------------------------


def integrated_gradients(
    model: nn.Module, images: Tensor, baseline: Tensor, steps: int = 16, batch_size: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Each subject's signed Integrated Gradients from ``baseline``, and what they should add up to.

    ``images`` is (N, C, X, Y, Z) and ``baseline`` (C, X, Y, Z); the attributions are float32 of
    the images' shape, in years of predicted age. The second array is ``f(x) - f(baseline)``
    per subject, in years: a subject's attributions sum to it up to the quadrature's error
    (completeness). Subjects are attributed one at a time, ``batch_size`` path points per pass
    (the training batch: what fits).
    """
    model.eval()
    device = next(model.parameters()).device
    explainer = IntegratedGradients(model)
    start = baseline[None].to(device)
    attributions = np.empty(images.shape, dtype=np.float32)
    changes = np.empty(len(images))
    for index, image in enumerate(images):
        signed, delta = explainer.attribute(
            image[None].to(device),
            baselines=start,
            n_steps=steps,
            internal_batch_size=batch_size,
            return_convergence_delta=True,
        )
        attributions[index] = signed.detach()[0].float().cpu().numpy()
        # captum's delta is sum(attributions) - (f(x) - f(baseline)): the change follows without another pass.
        changes[index] = float(signed.sum()) - float(delta)
    return attributions, changes


def completeness_errors(attributions: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """Per subject, ``|sum of attributions - (f(x) - f(baseline))|``: what the quadrature misses, in years."""
    sums = attributions.sum(axis=tuple(range(1, attributions.ndim)), dtype=np.float64)
    return np.abs(sums - changes)


def attribution_shares(attributions: np.ndarray) -> np.ndarray:
    """Each subject's ``|attribution|`` divided by its sum over voxels and channels (N, C, X, Y, Z).

    A subject whose prediction does not depend on its image keeps a map of zeros.
    """
    magnitude = np.abs(attributions)
    totals = magnitude.sum(axis=tuple(range(1, magnitude.ndim)), dtype=np.float64, keepdims=True)
    # In place: where a total is 0 the magnitudes are all 0 already.
    return np.divide(magnitude, totals, out=magnitude, where=totals > 0)


def randomized_model(model_name: str, channels: int, model_params: Mapping[str, Any], seed: int) -> nn.Module:
    """The architecture of a trained run with fresh random weights (its own initialization), in eval mode.

    Adebayo et al. 2018's model-randomization test re-draws the weights: a map that survives it
    shows the input, not what the model learned.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(model_name, channels, **model_params)
    return model.eval()


def group_mean(maps: np.ndarray) -> np.ndarray:
    """The mean over subjects (axis 0) of per-subject maps."""
    return maps.mean(axis=0)


def age_tertiles(ages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the youngest and the oldest third of ``ages`` (ties stay in their tertile)."""
    ages = np.asarray(ages, dtype=float)
    low, high = np.quantile(ages, [1 / 3, 2 / 3])
    return ages <= low, ages >= high


def young_old_difference(maps: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """Mean map of the oldest eval age tertile minus that of the youngest: where attribution moves with age."""
    young, old = age_tertiles(ages)
    return maps[old].mean(axis=0) - maps[young].mean(axis=0)


def rank_correlation(first: np.ndarray, second: np.ndarray, where: np.ndarray) -> float:
    """Spearman's rank correlation of two maps over the voxels in ``where`` (NaN if fewer than 3)."""
    where = np.asarray(where, dtype=bool)
    if where.sum() < 3:
        return float("nan")
    return float(stats.spearmanr(first[where], second[where]).statistic)


def randomization_correlations(
    trained: np.ndarray, randomized: np.ndarray, images: np.ndarray, baseline: np.ndarray
) -> np.ndarray:
    """Per channel, the median over subjects of the rank correlation of two models' signed attributions.

    ``trained`` and ``randomized`` are the signed attributions (N, C, X, Y, Z) of the same
    ``images`` from ``baseline`` (C, X, Y, Z); each subject's correlation runs over the voxels
    where it differs from the baseline, the only ones either model can attribute.
    """
    differs = images != baseline[None]
    return np.array(
        [
            np.nanmedian([rank_correlation(trained[n, c], randomized[n, c], differs[n, c]) for n in range(len(images))])
            for c in range(images.shape[1])
        ]
    )


# --- regions ----------------------------------------------------------------------------------


def template_regions(grid_affine: np.ndarray, shape: Sequence[int]) -> list[Region]:
    """GM, WM and CSF (ventricles included) of the MNI152 templates, as fractions of each grid voxel.

    The templates are probability maps at 1 mm (:mod:`brainage.templates`); CSF is the
    intracranial volume (the T1 template's non-zero region) minus GM and WM, as in
    :mod:`brainage.synth.anatomy`. Each grid voxel averages 3×3×3 samples (:func:`brainage.
    tensors.coverage`). Only meaningful when the grid is in template space.
    """
    images = {name: load_image(template_path(name)) for name in (TEMPLATE_T1, TEMPLATE_GM, TEMPLATE_WM)}
    template_affine = images[TEMPLATE_T1].affine
    to_template = np.linalg.inv(template_affine) @ grid_affine
    # The probability maps are stored as 0-255.
    gm, wm = (np.asanyarray(images[name].dataobj, dtype=np.float32) / 255 for name in (TEMPLATE_GM, TEMPLATE_WM))
    icv = (np.asanyarray(images[TEMPLATE_T1].dataobj) > 0).astype(np.float32)
    fractions = {"GM": gm, "WM": wm, "CSF": np.clip(icv - gm - wm, 0.0, 1.0)}
    return [Region(name, TEMPLATE, coverage(values, to_template, shape)) for name, values in fractions.items()]


def vessel_region(mean_vessels: np.ndarray) -> Region:
    """Voxels where the training subjects' mean vessel fraction reaches :data:`VESSEL_FREQUENCY`."""
    return Region("vessels", DATA, (mean_vessels >= VESSEL_FREQUENCY).astype(np.float32))


def atlas_regions(image: str | Path, labels: str | Path, grid_affine: np.ndarray, shape: Sequence[int]) -> list[Region]:
    """One region per label of a labelled atlas in template space: the fraction of each grid voxel it covers.

    ``labels`` is a CSV or TSV with columns ``index`` (the label value) and ``name``. Raises
    ValueError naming the file when a column is missing or a label is absent from the image.
    """
    table = read_table(labels)
    missing = [column for column in ("index", "name") if column not in table.columns]
    if missing:
        raise ValueError(f"{labels}: atlas label table lacks columns {missing} (needs index, name)")
    atlas = load_image(image)
    values = np.asanyarray(atlas.dataobj)
    to_atlas = np.linalg.inv(atlas.affine) @ grid_affine
    regions = []
    for row in table.itertuples(index=False):
        mask = values == row.index
        if not mask.any():
            raise ValueError(f"{image}: label {row.index} ({row.name}) of {labels} does not occur in the atlas")
        regions.append(Region(str(row.name), ATLAS, coverage(mask, to_atlas, shape)))
    return regions


def truth_regions(
    grid_affine: np.ndarray, shape: Sequence[int], young_age: float, old_age: float, scale: float, seed: int
) -> list[Region]:
    """Where the synthetic generator puts the age signal, on a training grid in template space.

    ``ventricles`` and ``cortex and sulci``: the fraction of each grid voxel that turns into CSF
    between biological ages ``young_age`` and ``old_age`` (:func:`brainage.synth.ageing.
    age_effects`: atrophy, cortical thinning, ventricular enlargement), split by the reach of the
    template's ventricle map. ``arterial tree``: voxels where at least :data:`VESSEL_FREQUENCY`
    of :data:`TRUTH_TREES` trees drawn at ages spread from young to old hold a vessel
    (:func:`brainage.synth.vessels.vessel_tree`: pruning, distal signal and tortuosity change
    with age). Head coordinates are template mm, so the grid's affine maps its voxels to them;
    the subjects' affine registration to the template is assumed to undo their head pose.
    ``pruned branches``: how much more often a tree drawn at ``young_age`` than one drawn at
    ``old_age`` holds a vessel in each voxel (the distal branches that age removes; most of the
    tree's trunks are there at every age and carry little of the age signal).
    """
    anatomy = template_anatomy(working_step(scale))
    fine_shape, fine_affine = _supersampled(shape, grid_affine)
    csf_only = {tissue: float(tissue == "csf") for tissue in CONTRAST[T1]}
    csf = [
        block_average(render_tissue(fine_shape, fine_affine, age_effects(age), anatomy, csf_only), TRUTH_SUPERSAMPLING)
        for age in (young_age, old_age)
    ]
    turned = np.clip(csf[1] - csf[0], 0.0, 1.0)
    ventricle_map = anatomy.brain.values[..., 2]
    to_map = np.linalg.inv(anatomy.brain.affine) @ fine_affine
    fine_points = np.indices(fine_shape).reshape(3, -1).astype(float)
    sampled = ndimage.map_coordinates(
        ventricle_map, to_map[:3, :3] @ fine_points + to_map[:3, 3:4], order=1, mode="constant"
    )
    near_ventricles = block_average((sampled > 0).reshape(fine_shape), TRUTH_SUPERSAMPLING)
    rng = random_stream(seed, "attribution", "vessels")
    trees = [
        vessel_tree(tuple(shape), grid_affine, age, rng)[0] for age in np.linspace(young_age, old_age, TRUTH_TREES)
    ]
    tree_frequency = np.mean(trees, axis=0)
    young_trees, old_trees = (
        np.mean([vessel_tree(tuple(shape), grid_affine, age, rng)[0] for _ in range(TRUTH_TREES)], axis=0)
        for age in (young_age, old_age)
    )
    return [
        Region("ventricles", TRUTH, turned * near_ventricles),
        Region("cortex and sulci", TRUTH, turned * (1.0 - near_ventricles)),
        Region("arterial tree", TRUTH, (tree_frequency >= VESSEL_FREQUENCY).astype(np.float32)),
        Region("pruned branches", TRUTH, np.clip(young_trees - old_trees, 0.0, 1.0).astype(np.float32)),
    ]


def _supersampled(shape: Sequence[int], affine: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """A grid of :data:`TRUTH_SUPERSAMPLING`³ sub-voxels per voxel of ``shape``, and its affine."""
    n = TRUTH_SUPERSAMPLING
    # Sub-voxel f of voxel i sits at grid coordinate i + (f mod n + 0.5) / n - 0.5.
    fine_to_grid = np.diag([1.0 / n, 1.0 / n, 1.0 / n, 1.0])
    fine_to_grid[:3, 3] = (0.5 / n) - 0.5
    return tuple(int(size) * n for size in shape), affine @ fine_to_grid


def volume_share(region: Region, brain: np.ndarray) -> float:
    """The region's part of the brain's volume; ``brain`` weighs each voxel (a fraction of subjects)."""
    return float((region.weights * brain).sum(dtype=np.float64) / brain.sum(dtype=np.float64))


def enrichment_table(
    mean_map: np.ndarray,
    randomized_map: np.ndarray,
    channels: Sequence[str],
    regions: Sequence[Region],
    brain: np.ndarray,
    rank_correlations: Sequence[float],
) -> pd.DataFrame:
    """Per channel and region: shares of volume and attribution, and their ratio (enrichment).

    ``mean_map`` and ``randomized_map`` are group means (C, X, Y, Z) of the trained and the
    randomized model; ``brain`` weighs the voxels of the volume shares. A region's attribution
    share is the part of the channel's attribution it holds; ``channel_share`` is the channel's
    part of the run's; ``rank_correlations`` per channel those of :func:`randomization_correlations`.
    """
    rows = []
    for index, channel in enumerate(channels):
        trained, randomized = mean_map[index], randomized_map[index]
        for region in regions:
            volume = volume_share(region, brain)
            share, randomized_share = _share(trained, region.weights), _share(randomized, region.weights)
            rows.append(
                {
                    "channel": channel,
                    "region": region.name,
                    "kind": region.kind,
                    "volume_share": volume,
                    "attribution_share": share,
                    "enrichment": share / volume if volume > 0 else np.nan,
                    "randomized_attribution_share": randomized_share,
                    "randomized_enrichment": randomized_share / volume if volume > 0 else np.nan,
                    "channel_share": float(trained.sum(dtype=np.float64) / mean_map.sum(dtype=np.float64)),
                    "randomized_rank_correlation": rank_correlations[index],
                }
            )
    return pd.DataFrame(rows)


def _share(values: np.ndarray, weights: np.ndarray) -> float:
    total = float(values.sum(dtype=np.float64))
    return float((values * weights).sum(dtype=np.float64)) / total if total > 0 else np.nan


# --- once per study: the regions --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainingMeans:
    """Per-voxel means over the training subjects, on the training grid."""

    # Channel (vocabulary.CHANNELS, in order) -> mean array: the attribution baseline; the mean
    # T1 is the figures' background and the mean vessel fraction (TOF_bin) gives the vessel region.
    channels: Mapping[str, np.ndarray]
    brain: np.ndarray  # fraction of subjects whose brain holds the voxel (non-zero T1)

    def baseline(self, channels: Sequence[str]) -> Tensor:
        """The average training subject in a run's ``channels``: (C, X, Y, Z), the Integrated Gradients baseline."""
        return torch.from_numpy(np.stack([self.channels[channel] for channel in channels]))


# The volumes of the training means file, in order: each channel's mean, then the brain.
MEAN_VOLUMES = (*CHANNELS, "brain")


@dataclasses.dataclass(frozen=True)
class RegionOutputs:
    """The files :func:`study_regions` writes once per study; the rule ``attribution_regions`` names them."""

    regions: Path  # NIfTI (X, Y, Z, region): each region's fraction of every grid voxel
    table: Path  # CSV, one row per region in the NIfTI's order: region, kind, volume_share
    means: Path  # NIfTI (X, Y, Z, volume): the training means of MEAN_VOLUMES, in that order


def training_means(manifest: pd.DataFrame, split: pd.DataFrame) -> TrainingMeans:
    """The mean of every channel and of the brain over the training subjects, whatever channels a run uses.

    The arrays as the models were trained on them, without augmentation: the Integrated
    Gradients baseline of every run, so each run explains its predictions against the same
    average subject.
    """
    dataset = AgeDataset(manifest, split, TRAIN, CHANNELS)
    if len(dataset) == 0:
        raise ValueError("the split has no training subjects")
    t1 = CHANNELS.index(T1)
    totals = None
    for index in range(len(dataset)):
        image = dataset[index][0].numpy().astype(np.float64)
        subject = np.concatenate([image, image[[t1]] != 0])
        totals = subject if totals is None else totals + subject
    means = (totals / len(dataset)).astype(np.float32)
    return TrainingMeans(dict(zip(CHANNELS, means[:-1], strict=True)), means[-1])


def study_regions(
    manifest: pd.DataFrame,
    split: pd.DataFrame,
    grid: Mapping[str, Any],
    template_space: bool,
    outputs: RegionOutputs,
    atlas: Mapping[str, str] | None = None,
    synthetic_scale: float | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """The regions every run is summarized over, and the training means; writes ``outputs``.

    ``grid`` is the config's ``preprocessing.grid``. The vessel region comes from the training
    subjects; tissue classes, ``atlas`` (``{"image", "labels"}``) and, with ``synthetic_scale``
    (synthetic data), the generator's truth between the youngest and oldest eval age need the
    grid in template space. Returns the region table.
    """
    affine = training_grid(grid["shape"], grid["spacing"])
    means = training_means(manifest, split)
    shape = means.brain.shape
    regions = [vessel_region(means.channels[TOF_BIN])]
    if template_space:
        regions = template_regions(affine, shape) + regions
        if atlas:
            regions += atlas_regions(atlas["image"], atlas["labels"], affine, shape)
        if synthetic_scale is not None:
            ages = split.loc[split["set"] == EVAL, "age"].to_numpy(float)
            regions += truth_regions(affine, shape, float(ages.min()), float(ages.max()), synthetic_scale, seed)
    else:
        log("training grid in PD space: no template tissue classes, atlas or generator truth regions")
    table = pd.DataFrame(
        {
            "region": [region.name for region in regions],
            "kind": [region.kind for region in regions],
            "volume_share": [volume_share(region, means.brain) for region in regions],
        }
    )
    save_image(_volumes(np.stack([region.weights for region in regions]), affine), outputs.regions)
    save_image(_volumes(np.stack([*means.channels.values(), means.brain]), affine, MEAN_VOLUMES), outputs.means)
    write_table(table, outputs.table)
    return table


def read_regions(files: RegionOutputs) -> tuple[list[Region], np.ndarray]:
    """The regions :func:`study_regions` wrote, and the training grid's affine."""
    image = nib.load(files.regions)
    volumes = np.asarray(image.dataobj, dtype=np.float32)
    rows = read_table(files.table)
    if volumes.shape[-1] != len(rows):
        raise ValueError(f"{files.regions} holds {volumes.shape[-1]} regions, {files.table} names {len(rows)}")
    regions = [
        Region(row.region, row.kind, volumes[..., index]) for index, row in enumerate(rows.itertuples(index=False))
    ]
    return regions, image.affine


def read_training_means(path: Path) -> TrainingMeans:
    """The training means :func:`study_regions` wrote."""
    volumes = np.moveaxis(np.asarray(nib.load(path).dataobj, dtype=np.float32), -1, 0)
    if len(volumes) != len(MEAN_VOLUMES):
        raise ValueError(f"{path} holds {len(volumes)} volumes, expected {', '.join(MEAN_VOLUMES)}")
    return TrainingMeans(dict(zip(CHANNELS, volumes[:-1], strict=True)), volumes[-1])


# --- one run ----------------------------------------------------------------------------------


def spread_by_age(ages: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` subjects spread evenly over the age order (all of them if fewer)."""
    order = np.argsort(ages, kind="stable")
    if len(order) <= count:
        return order
    return order[np.linspace(0, len(order) - 1, count).round().astype(int)]


def attribute_run(
    weights: Path,
    manifest: pd.DataFrame,
    split: pd.DataFrame,
    run: tuple[str, str, int],
    settings: Mapping[str, Any],
    regions: RegionOutputs,
    outputs: AttributionOutputs,
    batch_size: int,
    seed: int,
    device: str = "cpu",
    threads: int = 1,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Attribute a trained run's eval predictions and write ``outputs``; returns the regional table.

    ``run`` is (modality, model, replicate); ``settings`` the config's ``attribution``;
    ``regions`` the files of :func:`study_regions`; ``seed`` draws the randomized weights,
    which are attributed for :data:`RANDOMIZED_SUBJECTS` eval subjects spread over the ages.
    """
    config = AttributionSettings(**settings)
    modality, model_name, replicate = run
    dev = job_device(device, threads)
    model, meta = load_trained_model(weights)
    channels = list(meta["channels"])
    dataset = AgeDataset(manifest, split, EVAL, channels)
    if len(dataset) == 0:
        raise ValueError(f"{weights}: the split has no eval subjects to attribute")
    images = torch.stack([dataset[index][0] for index in range(len(dataset))])
    ages = dataset.ages.astype(float)
    means = read_training_means(regions.means)
    baseline = means.baseline(channels)

    signed, changes = integrated_gradients(model.to(dev), images, baseline, config.steps, batch_size)
    errors = completeness_errors(signed, changes)
    log(
        f"{config.steps} integration steps: completeness error median {np.median(errors):.2f}, max "
        f"{errors.max():.2f} years, against a median |f(x) - f(average training subject)| of "
        f"{np.median(np.abs(changes)):.2f} years, over {len(errors)} eval subjects"
    )
    chosen = spread_by_age(ages, RANDOMIZED_SUBJECTS)
    trained_signed = signed[chosen]
    maps = attribution_shares(signed)
    random_model = randomized_model(meta["model_name"], len(channels), meta["model_params"], seed).to(dev)
    randomized_signed, _ = integrated_gradients(random_model, images[chosen], baseline, config.steps, batch_size)
    correlations = randomization_correlations(
        trained_signed, randomized_signed, images[chosen].numpy(), baseline.numpy()
    )
    log(
        f"median rank correlation of signed attributions with randomized weights over {len(chosen)} eval "
        "subjects: " + ", ".join(f"{channel} {rho:.3f}" for channel, rho in zip(channels, correlations, strict=True))
    )
    mean_map, randomized_mean = group_mean(maps), group_mean(attribution_shares(randomized_signed))

    region_list, affine = read_regions(regions)
    table = enrichment_table(mean_map, randomized_mean, channels, region_list, means.brain, correlations)
    table = table.assign(modality=modality, model=model_name, replicate=replicate)[list(REGION_COLUMNS)]

    save_image(_volumes(mean_map, affine, channels), outputs.mean_map)
    if outputs.subject_maps is not None:
        for subject, subject_map in zip(dataset.subjects, maps, strict=True):
            save_image(_volumes(subject_map, affine, channels), outputs.subject_maps[subject])
    write_table(table, outputs.table)
    difference = young_old_difference(maps, ages)
    title = f"{modality} · {model_name}"
    plots.plot_attribution(mean_map, difference, channels, means.channels[T1], title, outputs.figure)
    return table


def _volumes(volumes: np.ndarray, affine: np.ndarray, names: Sequence[str] = ()) -> nib.Nifti1Image:
    """Volumes (V, X, Y, Z) as a 4-D NIfTI (X, Y, Z, V) on the grid, ``names`` in the header's description."""
    image = nib.Nifti1Image(np.ascontiguousarray(np.moveaxis(volumes, 0, -1), dtype=np.float32), affine)
    if names:
        image.header["descrip"] = ",".join(names).encode()[:79]
    return image
