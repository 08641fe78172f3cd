"""Training data: cached per-channel arrays, torchio augmentation and reproducible loaders.

Augmentation is seeded per sample: the sampler draws a seed for every (epoch, sample) from its
own generator and the dataset applies the transform under that seed. The augmented batch then
depends only on the sampler generator's state, not on the worker count, on which worker took
the sample, or on whether the run was resumed from a checkpoint.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchio as tio
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from brainage.vocabulary import SUBSETS

SPATIAL_TRANSFORMS: dict[str, type[tio.Transform]] = {
    "RandomAffine": tio.RandomAffine,
    "RandomFlip": tio.RandomFlip,
    "RandomElasticDeformation": tio.RandomElasticDeformation,
}


def polynomial_bias_field(shape: Sequence[int], order: int, coefficients: Sequence[float]) -> np.ndarray:
    """torchio's bias field ``exp(sum c_abc x^a y^b z^c)``, evaluated separably.

    Same coordinates as :meth:`tio.BiasField.generate_bias_field` (voxel centres relative to
    the volume centre, each axis divided by its largest value), same coefficient order
    (x-order outermost, then y, then z, total degree ≤ ``order``), same float64 sums and
    ``exp``, same float32 result: exact, not an approximation. torchio forms every monomial
    over the whole volume (≈ 20 full-volume products for order 3, 0.4 s at 128³); here the
    y-z part is summed on the 2-D (y, z) plane and one (X × order+1) · (order+1 × Y·Z) product
    gives the log-field, so the full volume is touched once by the product and once by ``exp``.
    """
    if len(shape) != 3:
        raise ValueError(f"bias field needs a 3-D shape, got {tuple(shape)}")
    powers = []
    for n in shape:
        half = n / 2
        axis = np.arange(-half, half) + 0.5
        if axis.max() > 0:
            axis = axis / axis.max()
        powers.append(np.stack([axis**degree for degree in range(order + 1)]))  # (order+1, n)
    table = np.zeros((order + 1,) * 3)
    index = 0
    for x_order in range(order + 1):
        for y_order in range(order + 1 - x_order):
            for z_order in range(order + 1 - (x_order + y_order)):
                table[x_order, y_order, z_order] = coefficients[index]
                index += 1
    if index != len(coefficients):
        raise ValueError(f"order {order} needs {index} coefficients, got {len(coefficients)}")
    px, py, pz = powers
    plane = np.einsum("abc,bj,ck->ajk", table, py, pz).reshape(order + 1, -1)  # (order+1, Y·Z)
    # einsum rather than BLAS: a matrix product with an inner dimension of 4 is slow in BLAS.
    log_field = np.einsum("ai,aj->ij", px, plane)  # (X, Y·Z), float64
    return np.exp(log_field, out=log_field).astype(np.float32).reshape(tuple(shape))


class FastBiasField(tio.BiasField):
    """:class:`tio.BiasField` with the field from :func:`polynomial_bias_field`."""

    @staticmethod
    def generate_bias_field(data: Any, order: int, coefficients: Sequence[float]) -> np.ndarray:
        return polynomial_bias_field(data.shape[1:], order, coefficients)


class FastRandomBiasField(tio.RandomBiasField):
    """``tio.RandomBiasField`` with an exact, ~50× faster field evaluation.

    The configuration name stays ``RandomBiasField`` and the arguments are torchio's
    (``coefficients``, ``order``, ``p``, ...). Parameters are drawn by torchio's own code in
    the same order from the same RNG (one coefficient set per ScalarImage, none for
    LabelMaps), so under a given seed the output equals torchio's to float precision; only
    :meth:`FastBiasField.generate_bias_field` differs.
    """

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        images = self.get_images_dict(subject)
        if not images:
            return subject
        coefficients = {name: self.get_params(self.order, self.coefficients_range) for name in images}
        orders = dict.fromkeys(images, self.order)
        # The subject is already this call's own copy (if copying was asked for): no second one.
        return FastBiasField(coefficients=coefficients, order=orders, **{**self._get_base_args(), "copy": False})(
            subject
        )


# torchio applies intensity transforms to ScalarImages only, so binary LabelMaps are spared.
# RandomBiasField is torchio's, drawn identically, with the field evaluated separably.
INTENSITY_TRANSFORMS: dict[str, type[tio.Transform]] = {
    "RandomBiasField": FastRandomBiasField,
    "RandomNoise": tio.RandomNoise,
    "RandomGamma": tio.RandomGamma,
    "RandomBlur": tio.RandomBlur,
}
TRANSFORMS = {**SPATIAL_TRANSFORMS, **INTENSITY_TRANSFORMS}
# Spatial transforms that fill voxels moved in from outside the grid.
PADDED_TRANSFORMS = ("RandomAffine",)

Transform = Callable[[dict[str, Tensor]], dict[str, Tensor]]


class ChannelTransform:
    """Apply one torchio pipeline to all channels of a subject at once.

    Every channel sees the same random spatial transform; continuous channels are ScalarImages
    (linear interpolation, intensity transforms), binary channels LabelMaps (nearest neighbour,
    no intensity transforms). Images get an identity RAS affine so that "LR" flips axis 0.
    Pipelines from :func:`build_transforms` do not copy: pass tensors that nothing else needs.
    """

    def __init__(self, pipeline: tio.Transform, binary_channels: Sequence[str]) -> None:
        self.pipeline = pipeline
        self.binary_channels = frozenset(binary_channels)

    def __call__(self, channels: dict[str, Tensor]) -> dict[str, Tensor]:
        """Transform ``{channel: tensor of shape (1, X, Y, Z)}`` and return the same layout."""
        images = {
            name: (tio.LabelMap if name in self.binary_channels else tio.ScalarImage)(tensor=tensor, affine=np.eye(4))
            for name, tensor in channels.items()
        }
        transformed = self.pipeline(tio.Subject(images))
        return {name: transformed[name].data for name in channels}


def torchio_arguments(entry: dict[str, Any], drop: Sequence[str] = ("name",)) -> dict[str, Any]:
    """An augmentation entry's arguments for its torchio class, without the keys in ``drop``.

    YAML gives lists; torchio wants tuples for axes and ranges.
    """
    return {key: tuple(value) if isinstance(value, list) else value for key, value in entry.items() if key not in drop}


def build_transforms(spec: Sequence[dict[str, Any]], binary_channels: Sequence[str]) -> Transform | None:
    """Map a config list like ``[{"name": "RandomFlip", "axes": ["LR"]}, ...]`` to a transform.

    Returns None for an empty spec (no augmentation). Raises ValueError for an unknown name or
    bad arguments, naming the entry and the allowed transforms.
    """
    if not spec:
        return None
    transforms = []
    for position, entry in enumerate(spec):
        name = entry.get("name")
        if name not in TRANSFORMS:
            raise ValueError(
                f"augmentation entry {position} has name {name!r}; allowed: {', '.join(sorted(TRANSFORMS))}"
            )
        kwargs = torchio_arguments(entry)
        # No defensive deep copies (torchio makes one per transform and one for Compose):
        # ChannelTransform wraps freshly loaded tensors that nothing else holds.
        kwargs.setdefault("copy", False)
        if name in PADDED_TRANSFORMS:
            # torchio pads with each image's minimum by default; the arrays' background is 0
            # (z-scored inside the brain, zero outside), and a border of the minimum (about -3)
            # moved HighRes3DNet's pooled features by 33 between-subject SDs (10 with 0).
            kwargs.setdefault("default_pad_value", 0.0)
        try:
            transforms.append(TRANSFORMS[name](**kwargs))
        except (TypeError, ValueError) as error:
            raise ValueError(f"augmentation entry {position} ({name}): bad arguments {kwargs}: {error}") from error
    return ChannelTransform(tio.Compose(transforms, copy=False), binary_channels)


class AgeDataset(Dataset):
    """Subjects of one split subset: (float32 tensor C×X×Y×Z, float32 age, subject id).

    Rows are chosen by subject id from ``split`` (``subject``, ``set``, ``age``) and joined to
    ``manifest`` (``subject``, ``tensor_<channel>``) by id, never by position. Arrays are read
    with ``np.load`` on every access, so workers hold no volumes between samples.

    An index may be an int or ``(int, seed)``; with a seed the transform runs under that seed
    (see :class:`SeededSampler`).
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        split: pd.DataFrame,
        subset: str,
        channels: Sequence[str],
        transforms: Transform | None = None,
    ) -> None:
        if subset not in SUBSETS:
            raise ValueError(f"unknown subset {subset!r}; valid subsets: {', '.join(SUBSETS)}")
        columns = [f"tensor_{channel}" for channel in channels]
        missing_columns = [c for c in ["subject", *columns] if c not in manifest.columns]
        if missing_columns:
            raise ValueError(f"manifest lacks columns {missing_columns}")
        missing_columns = [c for c in ("subject", "set", "age") if c not in split.columns]
        if missing_columns:
            raise ValueError(f"split lacks columns {missing_columns}")
        rows = split.loc[split["set"] == subset, ["subject", "age"]].astype({"subject": str})
        paths = manifest[["subject", *columns]].astype({"subject": str})
        if paths["subject"].duplicated().any():
            raise ValueError(
                f"manifest has duplicate subjects: {sorted(paths.loc[paths['subject'].duplicated(), 'subject'])}"
            )
        joined = rows.merge(paths, on="subject", how="left", validate="one_to_one")
        unknown = joined.loc[joined[columns].isna().any(axis=1), "subject"].tolist()
        if unknown:
            raise ValueError(f"split subjects {unknown} have no {', '.join(columns)} in the manifest")
        self.channels = list(channels)
        self.subjects: list[str] = joined["subject"].tolist()
        self.ages = joined["age"].to_numpy(dtype=np.float32)
        self.paths: list[list[Path]] = [[Path(p) for p in row] for row in joined[columns].itertuples(index=False)]
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor, str]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        volumes = {channel: self._load(index, i) for i, channel in enumerate(self.channels)}
        if self.transforms is not None:
            # fork_rng keeps the per-sample seed from disturbing the caller's RNG stream.
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                volumes = self.transforms(volumes)
        tensors = [volumes[channel].float() for channel in self.channels]
        # One channel needs no concatenation (a full-volume copy).
        image = tensors[0] if len(tensors) == 1 else torch.cat(tensors)
        return image, torch.tensor(self.ages[index]), self.subjects[index]

    def _load(self, index: int, channel_index: int) -> Tensor:
        """One channel as a float32 (1, X, Y, Z) tensor; a bad file is reported by name."""
        path = self.paths[index][channel_index]
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise ValueError(f"subject {self.subjects[index]}: cannot read {path}: {error}") from error
        if array.ndim != 3:
            raise ValueError(f"subject {self.subjects[index]}: {path} has shape {array.shape}, expected 3D")
        # One copy: memory-mapped float16/uint8 → float32 in RAM.
        return torch.from_numpy(np.asarray(array, dtype=np.float32))[None]


class SeededSampler(Sampler[tuple[int, int]]):
    """Yield ``(index, seed)`` pairs: a permutation (if shuffling) and one seed per sample.

    Everything for an epoch is drawn from ``generator`` when iteration starts, so the
    generator's state between epochs fully determines the next epoch's order and augmentation.
    """

    def __init__(self, length: int, shuffle: bool, generator: torch.Generator) -> None:
        self.length = length
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.length, generator=self.generator) if self.shuffle else torch.arange(self.length)
        seeds = torch.randint(0, 2**31 - 1, (self.length,), generator=self.generator)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


def seed_worker(worker_id: int) -> None:
    """Seed Python and NumPy in a worker from its torch seed (which the loader derives)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: AgeDataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    seed: int,
    device_type: str,
) -> DataLoader:
    """A DataLoader whose order and augmentation are fixed by ``seed``.

    The sampler's generator (``loader.sampler.generator``) is the state to checkpoint; the
    loader's own generator only seeds workers, which the per-sample seeds make irrelevant.
    Workers persist across epochs; memory is pinned for CUDA. A shuffled (training) loader drops
    an incomplete last batch: a batch of one subject breaks batch norm once a network has pooled
    the grid down to a single voxel.
    """
    sampler = SeededSampler(len(dataset), shuffle, torch.Generator().manual_seed(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        drop_last=shuffle and len(dataset) > batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device_type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed + 1),
    )
