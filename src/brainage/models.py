"""3D CNNs that map an MRI volume (N, C, X, Y, Z) to a predicted age in years, shape (N,).

Three architectures, all built through :func:`build_model`:

- ``cnn3d``: the researcher's plain network (conv → norm → ReLU → maxpool per block).
- ``highresnet``: HighRes3DNet (Li et al. 2017), dilated pre-activation residual blocks.
- ``sfcn``: Simple Fully Convolutional Network (Peng et al. 2021), a classifier over 1-year
  age bins trained with soft labels; its predicted age is the expectation over the bins.

Regression heads (``cnn3d``, ``highresnet``) predict a standardized age internally and map it
back to years with the training mean and SD held as buffers (:class:`AgeHead`): the output and
the loss stay in years while the optimizer works on a unit-scale target, and a fresh model
starts by predicting the mean age.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

NORMS = ("batch", "group", "instance")
# Default widths (published ones for HighRes3DNet and SFCN); the CPU demo passes narrower ones.
CNN3D_CHANNELS = (8, 16, 32, 64, 128)
HIGHRES_WIDTHS = (16, 32, 64)
SFCN_CHANNELS = (32, 64, 128, 256, 256, 64)
_MAX_GROUPS = 8


def _check_norm_extent(layer: nn.Module, x: Tensor, per_group: int) -> None:
    """Refuse to normalize groups of a single value: the output would be a constant.

    Happens when the input grid is too small for the number of poolings before the layer.
    """
    if per_group * x.shape[2:].numel() < 2:
        raise ValueError(
            f"{type(layer).__name__} over a {tuple(x.shape[2:])} map normalizes single values to a constant; "
            "use a larger input grid, fewer pooling blocks, or batch norm"
        )


class GroupNorm3d(nn.GroupNorm):
    """GroupNorm that refuses groups holding a single value (see :func:`_check_norm_extent`)."""

    def forward(self, x: Tensor) -> Tensor:
        _check_norm_extent(self, x, self.num_channels // self.num_groups)
        return super().forward(x)


class InstanceNorm3d(nn.InstanceNorm3d):
    """InstanceNorm that refuses single-voxel maps, in eval mode too (torch checks only training)."""

    def forward(self, x: Tensor) -> Tensor:
        _check_norm_extent(self, x, 1)
        return super().forward(x)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A 3D normalization layer: BatchNorm, GroupNorm (up to 8 groups) or affine InstanceNorm.

    GroupNorm takes the largest group count ≤ 8 that divides ``channels`` so narrow demo widths
    (4, 6 channels) still work.
    """
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "group":
        return GroupNorm3d(math.gcd(channels, _MAX_GROUPS), channels)
    if kind == "instance":
        return InstanceNorm3d(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r}; valid norms: {', '.join(NORMS)}")


def init_weights(model: nn.Module) -> None:
    """He (Kaiming normal, fan_out, ReLU) init for convolutions; unit/zero affine norms.

    fan_out keeps the backward signal's variance constant, which matters more than the forward
    one for deep ReLU stacks trained from scratch.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm3d)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


class AgeHead(nn.Module):
    """Linear head whose output is ``age_mean + age_sd * linear(features)``, in years.

    Equivalent to training on standardized ages with the head bias at the mean age; keeping the
    mean and SD as buffers means the saved state dict alone reproduces predictions in years.
    """

    def __init__(self, in_features: int, age_mean: float, age_sd: float) -> None:
        super().__init__()
        if not age_sd > 0:
            raise ValueError(f"age_sd must be positive, got {age_sd}")
        self.linear = nn.Linear(in_features, 1)
        # Small weights and zero bias: a fresh model predicts age_mean for every input.
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_sd", torch.tensor(float(age_sd)))

    def forward(self, features: Tensor) -> Tensor:
        # float32 even under bf16 autocast: bf16 would round ages to about half a year.
        with torch.autocast(features.device.type, enabled=False):
            return self.age_mean + self.age_sd * self.linear(features.float()).squeeze(1)


class CNN3D(nn.Module):
    """Plain CNN: per block conv3³ → norm → ReLU → maxpool2; global average pool; linear head."""

    def __init__(
        self,
        in_channels: int,
        norm: str = "batch",
        channels: Sequence[int] = CNN3D_CHANNELS,
        dropout: float = 0.0,
        age_mean: float = 50.0,
        age_sd: float = 15.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            # No conv bias: the following norm layer has its own shift.
            layers += [
                nn.Conv3d(previous, width, 3, padding=1, bias=False),
                norm_layer(norm, width),
                nn.ReLU(inplace=True),
                nn.MaxPool3d(2),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = AgeHead(previous, age_mean, age_sd)
        init_weights(self.features)

    def forward(self, x: Tensor) -> Tensor:
        features = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(features))


def pad_channels(x: Tensor, channels: int) -> Tensor:
    """Zero-pad the channel dimension up to ``channels``: HighRes3DNet's parameter-free shortcut."""
    missing = channels - x.shape[1]
    if missing == 0:
        return x
    zeros = x.new_zeros((x.shape[0], missing, *x.shape[2:]))
    return torch.cat([x, zeros], dim=1)


class ResidualBlock(nn.Module):
    """Two pre-activation units (norm → ReLU → dilated conv3³) plus a zero-padded identity."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int, norm: str) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"residual block cannot shrink channels ({in_channels} → {out_channels})")
        self.out_channels = out_channels
        self.units = nn.Sequential(
            norm_layer(norm, in_channels),
            nn.ReLU(),
            nn.Conv3d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return pad_channels(x, self.out_channels) + self.units(x)


class HighResNet(nn.Module):
    """HighRes3DNet (Li et al. 2017) with a global-pool regression head.

    A 3³ conv to ``widths[0]`` (norm + ReLU), then three residual blocks per width with dilations
    1, 2, 4, then norm + ReLU (the pre-activation blocks leave their sum un-normalized), global
    average pooling and :class:`AgeHead`. ``checkpointing`` recomputes each block's activations
    in the backward pass instead of storing them: the network never downsamples, so activation
    memory, not parameters, limits the batch.
    """

    def __init__(
        self,
        in_channels: int,
        norm: str = "batch",
        widths: Sequence[int] = HIGHRES_WIDTHS,
        blocks_per_stage: int = 3,
        dilations: Sequence[int] = (1, 2, 4),
        checkpointing: bool = False,
        age_mean: float = 50.0,
        age_sd: float = 15.0,
    ) -> None:
        super().__init__()
        if len(widths) != len(dilations):
            raise ValueError(
                f"highresnet needs one dilation per width, got widths={list(widths)} dilations={list(dilations)}"
            )
        self.checkpointing = checkpointing
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, widths[0], 3, padding=1, bias=False),
            norm_layer(norm, widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        previous = widths[0]
        for width, dilation in zip(widths, dilations, strict=True):
            for _ in range(blocks_per_stage):
                blocks.append(ResidualBlock(previous, width, dilation, norm))
                previous = width
        self.blocks = nn.ModuleList(blocks)
        self.final = nn.Sequential(norm_layer(norm, previous), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.head = AgeHead(previous, age_mean, age_sd)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = _checkpointed(block, x) if recompute else block(x)
        return self.head(self.pool(self.final(x)).flatten(1))


def _checkpointed(block: nn.Module, x: Tensor) -> Tensor:
    """Run ``block`` under activation checkpointing without double-counting norm statistics.

    The backward pass re-runs the block; in training mode that would update BatchNorm running
    statistics a second time, so the re-run restores the block's buffers afterwards.
    """
    calls = 0

    def run(inp: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        if calls == 1:
            return block(inp)
        saved = [buffer.clone() for buffer in block.buffers()]
        try:
            return block(inp)
        finally:
            # finally: torch stops the re-run early with an exception once it has what it needs.
            with torch.no_grad():
                for buffer, value in zip(block.buffers(), saved, strict=True):
                    buffer.copy_(value)

    return checkpoint(run, x, use_reentrant=False)


class SFCN(nn.Module):
    """Simple Fully Convolutional Network (Peng et al. 2021) over age bins.

    Blocks ``channels[:-1]``: conv3³ → norm → maxpool2 → ReLU (``pooled``); then conv1³ to
    ``channels[-1]`` → norm → ReLU (``pointwise``); global average pooling (the paper's fixed
    5×6×5 pool is global for its 160×192×160 input), dropout, conv1³ to one logit per bin.
    ``forward`` returns the predicted age (expectation over bins); :meth:`log_probs` returns the
    log-softmax the loss needs.
    """

    def __init__(
        self,
        in_channels: int,
        norm: str = "batch",
        channels: Sequence[int] = SFCN_CHANNELS,
        age_min: float = 14.0,
        age_max: float = 94.0,
        bin_width: float = 1.0,
        dropout: float = 0.5,
        label_sigma: float = 1.0,
    ) -> None:
        super().__init__()
        n_bins = (age_max - age_min) / bin_width
        if n_bins < 2 or abs(n_bins - round(n_bins)) > 1e-6:
            raise ValueError(
                f"sfcn age range [{age_min}, {age_max}) must hold a whole number (≥ 2) of {bin_width}-year bins"
            )
        if len(channels) < 2:
            raise ValueError(f"sfcn needs at least 2 channel entries (pooled blocks + 1³ block), got {list(channels)}")
        self.age_min, self.age_max, self.label_sigma = float(age_min), float(age_max), float(label_sigma)
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels[:-1]:
            layers += [
                nn.Conv3d(previous, width, 3, padding=1),
                norm_layer(norm, width),
                nn.MaxPool3d(2),
                nn.ReLU(inplace=True),
            ]
            previous = width
        self.pooled = nn.Sequential(*layers)
        self.pointwise = nn.Sequential(
            nn.Conv3d(previous, channels[-1], 1), norm_layer(norm, channels[-1]), nn.ReLU(inplace=True)
        )
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv3d(channels[-1], round(n_bins), 1)
        centers = age_min + bin_width * (torch.arange(round(n_bins), dtype=torch.float32) + 0.5)
        self.register_buffer("bin_centers", centers)
        init_weights(self)

    def log_probs(self, x: Tensor) -> Tensor:
        """Log-probabilities over age bins, shape (N, n_bins)."""
        features = self.dropout(self.pool(self.pointwise(self.pooled(x))))
        # The tiny classifier runs in float32 even under bf16 autocast, for precise bin probabilities.
        with torch.autocast(x.device.type, enabled=False):
            logits = self.classifier(features.float()).flatten(1)
        return F.log_softmax(logits, dim=1)

    def expected_age(self, log_probs: Tensor) -> Tensor:
        """Predicted age in years: the expectation of the bin centers under the predicted distribution."""
        # Elementwise product and sum, not a matmul, which autocast would run in bf16.
        return (log_probs.exp() * self.bin_centers).sum(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.expected_age(self.log_probs(x))


def sfcn_soft_labels(ages: Tensor, bin_centers: Tensor, sigma: float = 1.0) -> Tensor:
    """Gaussian soft labels: the N(age, σ²) mass in each bin, renormalized to sum to 1.

    As in the paper's ``num2vect``, each bin gets the Gaussian CDF difference across its edges;
    renormalizing keeps ages near the range ends a proper distribution. Bins must be equally
    spaced. Raises ValueError when an age lies so far outside the bins that no mass falls in them.
    """
    width = bin_centers[1] - bin_centers[0]
    edges_low = (bin_centers - width / 2)[None, :]
    ages = ages.to(bin_centers.dtype)[:, None]
    mass = torch.special.ndtr((edges_low + width - ages) / sigma) - torch.special.ndtr((edges_low - ages) / sigma)
    total = mass.sum(dim=1, keepdim=True)
    if bool((total < 1e-6).any()):
        outside = ages[total < 1e-6].tolist()
        raise ValueError(
            f"ages {outside} lie outside the SFCN bins "
            f"[{float(edges_low.min())}, {float(edges_low.max() + width)}); widen age_min/age_max"
        )
    return mass / total


def sfcn_kl_loss(log_probs: Tensor, soft_labels: Tensor) -> Tensor:
    """KL(soft labels ‖ predicted), averaged over the batch: the paper's training loss."""
    return F.kl_div(log_probs, soft_labels, reduction="batchmean")


MODELS: dict[str, Callable[..., nn.Module]] = {"cnn3d": CNN3D, "highresnet": HighResNet, "sfcn": SFCN}


def build_model(name: str, in_channels: int, norm: str = "batch", **params: Any) -> nn.Module:
    """Build a model by name; ``params`` are the architecture's keyword arguments.

    Raises ValueError for an unknown name, norm or parameter, naming the valid ones.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid norms: {', '.join(NORMS)}")
    try:
        return MODELS[name](in_channels, norm=norm, **params)
    except TypeError as error:
        raise ValueError(f"bad parameters {sorted(params)} for model {name!r}: {error}") from error


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def _read_weights(path: Path) -> dict[str, Any]:
    """``torch.load`` restricted to tensors and plain containers, with errors naming the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise ValueError(f"{path}: weights file does not exist") from error
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError) as error:
        # weights_only rejects pickles that would import or call code with UnpicklingError.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a safe PyTorch weights file ({first_line})") from error
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def load_init_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load the tensors of ``path`` whose names and shapes match ``model``; leave the rest.

    Accepts a bare state dict or a dict holding one under ``model`` or ``state_dict`` (as
    ``model.pt`` does). Returns the ``matched``, ``missing`` (in the model, not the file),
    ``unexpected`` (in the file, not the model) and ``mismatched`` (same name, other shape) keys
    for the caller to log. Raises ValueError naming the file when it is not a weights file or
    would run code.
    """
    path = Path(path)
    obj = _read_weights(path)
    state = next((obj[key] for key in ("model", "state_dict") if isinstance(obj.get(key), dict)), obj)
    if not all(isinstance(value, Tensor) for value in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (bare, or under 'model' / 'state_dict')")
    own = model.state_dict()
    matched = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    report = {
        "matched": matched,
        "missing": [k for k in own if k not in state],
        "unexpected": [k for k in state if k not in own],
        "mismatched": [k for k, v in state.items() if k in own and own[k].shape != v.shape],
    }
    model.load_state_dict({k: state[k] for k in matched}, strict=False)
    return report


def load_trained_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`brainage.train.train_run` and return it with its metadata.

    The model is in eval mode on the CPU.
    """
    path = Path(path)
    saved = _read_weights(path)
    missing = [key for key in ("model_name", "model_params", "channels", "state_dict") if key not in saved]
    if missing:
        raise ValueError(f"{path}: not a trained-model file, missing keys {missing}")
    model = build_model(saved["model_name"], len(saved["channels"]), **saved["model_params"])
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model, {k: v for k, v in saved.items() if k != "state_dict"}
