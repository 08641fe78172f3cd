"""Train one brain-age model: resumable, seeded, with selection on the tune set only.

Targets: regression heads predict a standardized age and map it back to years with the
training-set mean and SD (:class:`brainage.models.AgeHead`), so the L1 loss is in years and a
fresh model predicts the mean age. SFCN is trained with the KL divergence to Gaussian soft labels
over its 1-year bins and predicts the expectation over the bins.

Schedule: the learning rate follows a cosine or one-cycle curve over all planned batches and
is stepped after every batch (smooth, and independent of where early stopping ends the run).

Selection: the epoch with the lowest tune MAE is kept; training stops after ``patience``
epochs without improvement. The eval MAE is computed every epoch for the learning curve only.

Resumption: after every epoch the full state goes to the ``checkpoint`` file (outside the rule's
outputs). A rerun with the same configuration and data resumes after the last completed epoch
and ends with the same history as an uninterrupted run. Outputs are written only at the end,
each atomically, and the checkpoint is removed once they exist.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from brainage.data import AgeDataset, build_transforms, make_loader
from brainage.device import job_device
from brainage.io import atomic_path, write_table
from brainage.metrics import PREDICTION_COLUMNS
from brainage.models import SFCN, build_model, count_parameters, load_init_weights, sfcn_kl_loss, sfcn_soft_labels
from brainage.vocabulary import BINARY_CHANNELS, EVAL, SUBSETS, TRAIN, TUNE

SCHEDULES = ("cosine", "onecycle")
HISTORY_COLUMNS = ["epoch", "train_loss", "tune_mae", "eval_mae", "lr", "seconds", "samples_per_s"]
# Keys that change where and how fast the run goes, not what it computes: a rerun with other
# values may resume the same run.
_NON_RESULT_KEYS = ("workers", "device")


@dataclasses.dataclass(frozen=True)
class RunOutputs:
    """The files :func:`train_run` writes at the end of a run; the rule ``train`` names them."""

    weights: Path  # the selected epoch's model (torch.save), see brainage.models.load_trained_model
    history: Path  # CSV, one row per epoch: HISTORY_COLUMNS
    predictions: Path  # CSV, one row per subject: PREDICTION_COLUMNS


class TrainingError(RuntimeError):
    """Training cannot continue (for example a non-finite loss), with the epoch and batch."""


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The ``training`` section of the config (with the model's overrides).

    config/schema.yaml has checked its keys, types and bounds before any job, and
    tests/test_config.py pins the schema's training keys and types to these fields. The
    defaults serve callers outside the workflow (tests, benchmarks), whose dictionaries may
    leave keys out.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    schedule: str = "cosine"
    grad_clip: float | None = None
    patience: int | None = None
    workers: int = 0
    augmentation: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    norm: str = "batch"
    init_weights: str | None = None
    amp: bool = False
    precise_bn: bool = False
    # The config's device choice; the workflow passes it as train_run's ``device`` argument,
    # which is what counts. A field so that the whole training section can be passed.
    device: str = "auto"


def train_run(
    manifest: pd.DataFrame,
    split: pd.DataFrame,
    channels: Sequence[str],
    model_name: str,
    model_params: dict[str, Any],
    training: dict[str, Any],
    outputs: RunOutputs,
    checkpoint: Path,
    threads: int,
    seed: int,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> None:
    """Train, select by tune MAE, and write ``outputs``; the state after each epoch goes to
    ``checkpoint``, which is removed once the outputs exist."""
    config = TrainingConfig(**training)
    checkpoint = Path(checkpoint)
    dev = job_device(device, threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = config.amp and dev.type == "cuda"
    if config.amp and not amp:
        log("amp requested but the device is the CPU: training in float32")
    seed_everything(seed)

    datasets = {subset: AgeDataset(manifest, split, subset, channels) for subset in SUBSETS}
    for subset in (TRAIN, TUNE):
        if len(datasets[subset]) == 0:
            raise ValueError(f"the split has no {subset!r} subjects")
    binary = [channel for channel in channels if channel in BINARY_CHANNELS]
    train_set = AgeDataset(manifest, split, TRAIN, channels, build_transforms(config.augmentation, binary))
    params = _model_params(model_name, model_params, config.norm, datasets[TRAIN].ages)
    model = build_model(model_name, len(channels), **params)
    if isinstance(model, SFCN):
        _check_sfcn_range(model, datasets)
    if config.init_weights:
        report = load_init_weights(model, config.init_weights)
        log(f"init weights {config.init_weights}: {len(report['matched'])} tensors loaded")
        for kind in ("missing", "unexpected", "mismatched"):
            if report[kind]:
                log(f"  {kind}: {', '.join(report[kind])}")
    model.to(dev)
    log(f"{model_name}: {count_parameters(model):,} parameters on {dev}, {len(train_set)} train subjects")

    train_loader = make_loader(train_set, config.batch_size, True, config.workers, seed, dev.type)
    eval_loaders = {
        subset: make_loader(dataset, config.batch_size, False, config.workers, seed, dev.type)
        for subset, dataset in datasets.items()
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config, config.epochs * len(train_loader))

    key = _config_key(manifest, split, channels, model_name, params, config, seed)
    state = _RunState()
    if checkpoint.exists():
        saved = _read_checkpoint(checkpoint, key, log)
        if saved is not None:
            state = _restore(saved, model, optimizer, scheduler, train_loader, dev)
            log(f"resuming from epoch {state.epoch}")

    while state.epoch < config.epochs and not _patience_exhausted(state, config):
        epoch = state.epoch + 1
        row = _run_epoch(model, optimizer, scheduler, train_loader, eval_loaders, config, dev, amp, epoch)
        if not math.isfinite(row["tune_mae"]):
            raise TrainingError(f"epoch {epoch}: tune MAE is {row['tune_mae']} (non-finite predictions in eval mode)")
        state.history.append(row)
        state.epoch = epoch
        improved = row["tune_mae"] < state.best_mae
        if improved:
            state.best_mae, state.best_epoch = row["tune_mae"], epoch
            state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            state.stale_epochs = 0
        else:
            state.stale_epochs += 1
        _save_checkpoint(checkpoint, key, state, model, optimizer, scheduler, train_loader)
        log(_epoch_line(row, state, config, model, improved))
    if _patience_exhausted(state, config) and state.epoch < config.epochs:
        log(f"early stopping after epoch {state.epoch}: tune MAE has not improved for {config.patience} epochs")

    model.load_state_dict(state.best_state)
    log(f"selected epoch {state.best_epoch} (tune MAE {state.best_mae:.3f})")
    tables = [_predictions(model, eval_loaders[subset], subset, dev, amp) for subset in SUBSETS]
    predictions = pd.concat([table for table in tables if len(table)], ignore_index=True)
    write_table(predictions, outputs.predictions)
    write_table(pd.DataFrame(state.history, columns=HISTORY_COLUMNS), outputs.history)
    with atomic_path(outputs.weights) as tmp:
        torch.save(
            {
                "state_dict": state.best_state,
                "model_name": model_name,
                "model_params": params,
                "channels": list(channels),
                "epoch": state.best_epoch,
                "tune_mae": state.best_mae,
                "seed": seed,
            },
            tmp,
        )
    checkpoint.unlink(missing_ok=True)


@dataclasses.dataclass
class _RunState:
    """Everything about the run's progress that a checkpoint must carry besides the torch objects."""

    epoch: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best_mae: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    stale_epochs: int = 0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _patience_exhausted(state: _RunState, config: TrainingConfig) -> bool:
    return config.patience is not None and state.stale_epochs >= config.patience


def _model_params(model_name: str, model_params: dict[str, Any], norm: str, train_ages: np.ndarray) -> dict[str, Any]:
    """Complete the config's model parameters with the norm and, for regression heads, the
    training age mean and SD (unless the config fixes them)."""
    params = {**model_params, "norm": norm}
    if model_name == "sfcn":
        return params
    ages = train_ages.astype(np.float64)
    return {"age_mean": float(ages.mean()), "age_sd": float(ages.std()) if len(ages) > 1 else 1.0, **params}


def _check_sfcn_range(model: SFCN, datasets: dict[str, AgeDataset]) -> None:
    """SFCN can only predict ages inside its bins: refuse subjects outside them, by id."""
    for subset, dataset in datasets.items():
        outside = [
            s for s, a in zip(dataset.subjects, dataset.ages, strict=True) if not model.age_min <= a < model.age_max
        ]
        if outside:
            raise ValueError(
                f"{subset} subjects {outside} have ages outside the SFCN bins "
                f"[{model.age_min}, {model.age_max}); set the model's age_min/age_max"
            )


def _scheduler(
    optimizer: torch.optim.Optimizer, config: TrainingConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine annealing to zero or one-cycle with peak ``lr``, both over all planned batches."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    raise ValueError(f"training.schedule is {config.schedule!r}; valid: {', '.join(SCHEDULES)}")


def _objective(model: nn.Module, images: Tensor, ages: Tensor) -> tuple[Tensor, Tensor]:
    """(training loss, predicted ages in years): KL to soft labels for SFCN, else L1 in years."""
    if isinstance(model, SFCN):
        log_probs = model.log_probs(images)
        targets = sfcn_soft_labels(ages, model.bin_centers, model.label_sigma)
        return sfcn_kl_loss(log_probs, targets), model.expected_age(log_probs)
    predicted = model(images).float()
    return F.l1_loss(predicted, ages), predicted


def _run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train_loader: DataLoader,
    eval_loaders: dict[str, DataLoader],
    config: TrainingConfig,
    device: torch.device,
    amp: bool,
    epoch: int,
) -> dict[str, float]:
    """One epoch of training then tune and eval scoring; returns the history row."""
    start = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    model.train()
    abs_error = objective = 0.0
    seen = 0
    for batch, (images, ages, subjects) in enumerate(train_loader, start=1):
        images = images.to(device, non_blocking=True)
        ages = ages.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, predicted = _objective(model, images, ages)
        if not torch.isfinite(loss):
            raise TrainingError(f"epoch {epoch}, batch {batch}: loss is {loss.item()} (subjects {', '.join(subjects)})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        objective += loss.item() * len(subjects)
        abs_error += (predicted.detach() - ages).abs().sum().item()
        seen += len(subjects)
    train_seconds = time.perf_counter() - start
    if config.precise_bn:
        recompute_batch_norm_statistics(model, eval_loaders[TRAIN], device, amp)
    tune = _predictions(model, eval_loaders[TUNE], TUNE, device, amp)
    evaluation = _predictions(model, eval_loaders[EVAL], EVAL, device, amp)
    return {
        "epoch": epoch,
        "train_loss": abs_error / seen,
        "tune_mae": _mae(tune),
        "eval_mae": _mae(evaluation),
        "lr": lr,
        "seconds": time.perf_counter() - start,
        "samples_per_s": seen / train_seconds,
        "objective": objective / seen,
    }


@torch.no_grad()
def recompute_batch_norm_statistics(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool) -> None:
    """Replace every BatchNorm layer's running statistics by their average over ``loader``.

    Eval mode normalizes with running statistics that training accumulated as an exponential
    average over recent augmented batches of a few subjects, while the weights moved under
    them: after a large step they describe an older network and other intensities, and the
    tune MAE spikes. Averaging over the un-augmented training set with the final weights
    ("precise BN", Wu and Johnson 2021) gives eval the statistics of the data it scores.
    Batches of one subject are skipped (train-mode BatchNorm needs two values per channel).
    Only the BatchNorm layers are put in training mode: dropout stays off, so the pass draws
    nothing from the RNG and training continues exactly as without it.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    model.eval()
    for norm in norms:
        norm.train()
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for images, _, subjects in loader:
                if len(subjects) > 1:
                    model(images.to(device, non_blocking=True))
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum


def _mae(predictions: pd.DataFrame) -> float:
    return float((predictions["predicted"] - predictions["age"]).abs().mean()) if len(predictions) else math.nan


def _predictions(model: nn.Module, loader: DataLoader, subset: str, device: torch.device, amp: bool) -> pd.DataFrame:
    """Predicted ages for every subject of ``loader`` (eval mode, no augmentation)."""
    model.eval()
    subjects: list[str] = []
    ages: list[Tensor] = []
    predicted: list[Tensor] = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for images, batch_ages, batch_subjects in loader:
            predicted.append(model(images.to(device, non_blocking=True)).float().cpu())
            ages.append(batch_ages)
            subjects.extend(batch_subjects)
    if not subjects:
        return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
    return pd.DataFrame(
        {
            "subject": subjects,
            "set": subset,
            "age": torch.cat(ages).double().numpy(),
            "predicted": torch.cat(predicted).double().numpy(),
        }
    )


def _epoch_line(
    row: dict[str, float], state: _RunState, config: TrainingConfig, model: nn.Module, improved: bool
) -> str:
    """One log line: losses, lr, timing, throughput and the ETA to the planned last epoch."""
    mean_seconds = sum(r["seconds"] for r in state.history) / len(state.history)
    eta = datetime.timedelta(seconds=round(mean_seconds * (config.epochs - state.epoch)))
    kl = f" kl {row['objective']:.4f}" if isinstance(model, SFCN) else ""
    return (
        f"epoch {state.epoch}/{config.epochs}: train_loss {row['train_loss']:.3f}{kl} "
        f"tune_mae {row['tune_mae']:.3f} eval_mae {row['eval_mae']:.3f} lr {row['lr']:.2e} "
        f"{row['seconds']:.1f}s {row['samples_per_s']:.1f} samples/s ETA {eta}" + (" (best)" if improved else "")
    )


def _config_key(
    manifest: pd.DataFrame,
    split: pd.DataFrame,
    channels: Sequence[str],
    model_name: str,
    params: dict[str, Any],
    config: TrainingConfig,
    seed: int,
) -> str:
    """A hash of everything that determines the run's results, data files included.

    A checkpoint from another configuration or from older arrays must not be resumed.
    """
    rows = split[["subject", "set", "age"]].astype({"subject": str}).sort_values("subject")
    paths = sorted(str(p) for c in channels for p in manifest[f"tensor_{c}"].dropna())
    files = [(p, Path(p).stat().st_size, Path(p).stat().st_mtime_ns) if Path(p).exists() else (p,) for p in paths]
    training = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NON_RESULT_KEYS}
    payload = {
        "split": rows.to_numpy().tolist(),
        "files": files,
        "channels": list(channels),
        "model": model_name,
        "params": params,
        "training": training,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _save_checkpoint(
    path: Path,
    key: str,
    state: _RunState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train_loader: DataLoader,
) -> None:
    """Write the complete run state atomically, in a form ``weights_only`` loading accepts."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    rng = {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sampler": train_loader.sampler.generator.get_state(),
    }
    payload = {
        "key": key,
        "run": dataclasses.asdict(state),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _read_checkpoint(path: Path, key: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The checkpoint's contents, or None (logged) when it is unreadable or for another run."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable checkpoint means starting over, never failing
        log(f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); starting from scratch")
        return None
    if not isinstance(saved, dict) or saved.get("key") != key:
        log(f"checkpoint {path} belongs to another configuration or data; starting from scratch")
        return None
    return saved


def _restore(
    saved: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train_loader: DataLoader,
    device: torch.device,
) -> _RunState:
    """Put the model, optimizer, scheduler and every RNG back as they were after the saved epoch."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng = saved["rng"]
    random.setstate(rng["python"])
    numpy_state = rng["numpy"]
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    train_loader.sampler.generator.set_state(rng["sampler"])
    return _RunState(**saved["run"])
