"""Training on a tiny synthetic cohort: learning, outputs, resumption, failures, devices."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from brainage.device import claim_gpu, select_device
from brainage.io import read_table
from brainage.metrics import PREDICTION_COLUMNS
from brainage.models import load_trained_model
from brainage.train import HISTORY_COLUMNS, RunOutputs, TrainingError, train_run

torch.set_num_threads(1)

SHAPE = (16, 20, 16)
SMALL = {
    "cnn3d": {"channels": [8, 16]},
    "highresnet": {"widths": [4, 8, 8]},
    "sfcn": {"channels": [4, 8, 8], "age_min": 14, "age_max": 94},
}
AUGMENT = [{"name": "RandomFlip", "axes": ["LR"]}, {"name": "RandomNoise", "std": 0.05, "p": 0.5}]


def make_cohort(root: Path, n: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Subjects whose bright blob grows with age, a float16 T1 and a uint8 mask of the blob.

    60 % train, 20 % tune, 20 % eval; the manifest index is shuffled and not 0..n-1.
    """
    rng = np.random.default_rng(0)
    ages = rng.uniform(20, 80, n)
    grid = np.stack(np.meshgrid(*[np.arange(s) - s / 2 + 0.5 for s in SHAPE], indexing="ij"))
    distance = np.sqrt((grid**2).sum(0))
    rows = []
    for i, age in enumerate(ages):
        subject = f"IXI{i:03d}"
        blob = distance < 2 + 5 * (age - 20) / 60
        t1 = blob + rng.normal(0, 0.2, SHAPE)
        np.save(root / f"{subject}_T1.npy", ((t1 - t1.mean()) / t1.std()).astype(np.float16))
        np.save(root / f"{subject}_TOF_bin.npy", blob.astype(np.uint8))
        rows.append(
            {
                "subject": subject,
                "age": age,
                "sex": "M",
                "site": "HH",
                "tensor_T1": str(root / f"{subject}_T1.npy"),
                "tensor_TOF_bin": str(root / f"{subject}_TOF_bin.npy"),
            }
        )
    manifest = pd.DataFrame(rows, index=rng.permutation(n) * 3 + 7)
    sets = np.array(["train"] * (n * 3 // 5) + ["tune"] * (n // 5) + ["eval"] * (n - n * 3 // 5 - n // 5))
    split = pd.DataFrame({"subject": manifest["subject"].to_numpy(), "set": sets, "age": ages})
    return manifest.sample(frac=1, random_state=3), split.sample(frac=1, random_state=4)


def training(**overrides: Any) -> dict[str, Any]:
    base = {
        "epochs": 3,
        "batch_size": 4,
        "lr": 3e-3,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "grad_clip": 5.0,
        "patience": 10,
        "workers": 0,
        "augmentation": AUGMENT,
        "norm": "batch",
        "amp": False,
    }
    return {**base, **overrides}


CHECKPOINT_NAME = "train_state.pt"


def outputs_in(folder: Path) -> RunOutputs:
    """A run's outputs in ``folder``, named as the workflow names them."""
    return RunOutputs(
        weights=folder / "model.pt", history=folder / "history.csv", predictions=folder / "predictions.csv"
    )


def run(
    tmp_path: Path,
    cohort: tuple[pd.DataFrame, pd.DataFrame],
    name: str = "cnn3d",
    out: str = "out",
    device: str = "cpu",
    **kwargs: Any,
) -> list[str]:
    """Train into tmp_path/out, checkpointing to tmp_path/ckpt_out; return the log lines."""
    lines: list[str] = []
    params = kwargs.pop("model_params", SMALL[name])
    train_run(
        *cohort,
        ["T1", "TOF_bin"],
        name,
        params,
        kwargs.pop("training", training()),
        outputs_in(tmp_path / out),
        tmp_path / f"ckpt_{out}" / CHECKPOINT_NAME,
        threads=1,
        seed=11,
        device=device,
        log=lines.append,
        **kwargs,
    )
    return lines


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_cohort(tmp_path_factory.mktemp("cohort"))


def test_cnn3d_learns_and_beats_predicting_the_mean(tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    run(tmp_path, cohort, training=training(epochs=12, augmentation=[]))
    history = read_table(tmp_path / "out" / "history.csv")
    assert history["train_loss"].iloc[-3:].mean() < history["train_loss"].iloc[:2].mean()
    split = cohort[1]
    train_mean = split.loc[split["set"] == "train", "age"].mean()
    tune_ages = split.loc[split["set"] == "tune", "age"]
    baseline = (tune_ages - train_mean).abs().mean()
    assert history["tune_mae"].min() < 0.7 * baseline


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_model_trains_and_writes_complete_outputs(
    tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame], name: str
) -> None:
    lines = run(tmp_path, cohort, name, training=training(epochs=1, schedule="onecycle"))
    out = tmp_path / "out"
    history = read_table(out / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1]
    assert np.isfinite(history[["train_loss", "tune_mae", "eval_mae", "samples_per_s"]].to_numpy()).all()
    predictions = read_table(out / "predictions.csv")
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    split = cohort[1].astype({"subject": str})
    merged = predictions.merge(split, on="subject", suffixes=("", "_split"), validate="one_to_one")
    assert len(merged) == len(split)
    assert (merged["set"] == merged["set_split"]).all()
    assert np.allclose(merged["age"], merged["age_split"], atol=1e-3)
    assert any(line.startswith("epoch 1/1:") and "samples/s" in line and "ETA" in line for line in lines)
    # model.pt rebuilds the selected model, which reproduces the written predictions.
    model, meta = load_trained_model(out / "model.pt")
    assert meta["model_name"] == name and meta["channels"] == ["T1", "TOF_bin"] and meta["epoch"] == 1
    tune = predictions[predictions["set"] == "tune"].iloc[:2]
    manifest = cohort[0].set_index("subject")
    images = torch.stack(
        [
            torch.from_numpy(
                np.stack([np.load(manifest.loc[s, f"tensor_{c}"]).astype(np.float32) for c in ("T1", "TOF_bin")])
            )
            for s in tune["subject"]
        ]
    )
    with torch.inference_mode():
        assert np.allclose(model(images).numpy(), tune["predicted"], atol=1e-3)
    assert not (tmp_path / "ckpt_out" / CHECKPOINT_NAME).exists()


TRAIN_IN_A_PROCESS = """
import json, sys
from pathlib import Path
import pandas as pd, torch
from brainage.train import RunOutputs, train_run
torch.set_num_threads(1)
args = json.loads(sys.argv[1])
log = open(args["log"], "a", buffering=1)
outputs = RunOutputs(*(Path(args["out"]) / name for name in ("model.pt", "history.csv", "predictions.csv")))
train_run(pd.read_csv(args["manifest"]), pd.read_csv(args["split"]), ["T1", "TOF_bin"], "cnn3d",
          args["params"], args["training"], outputs,
          Path(args["checkpoints"]) / "train_state.pt", threads=1, seed=11,
          device="cpu", log=lambda line: print(line, file=log))
"""


def start_training(
    tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame], out: str, **overrides: Any
) -> tuple[subprocess.Popen, Path]:
    """Train in a separate process, as a Snakemake job does; return it and its log file."""
    manifest, split = tmp_path / "manifest.csv", tmp_path / "split.csv"
    cohort[0].to_csv(manifest, index=False)
    cohort[1].to_csv(split, index=False)
    log = tmp_path / f"{out}.log"
    args = {
        "manifest": str(manifest),
        "split": str(split),
        "params": SMALL["cnn3d"],
        "training": training(**overrides),
        "out": str(tmp_path / out),
        "checkpoints": str(tmp_path / f"ckpt_{out}"),
        "log": str(log),
    }
    return subprocess.Popen([sys.executable, "-c", TRAIN_IN_A_PROCESS, json.dumps(args)]), log


def kill_during_epoch(process: subprocess.Popen, log: Path, epoch: int, timeout_s: float = 120) -> None:
    """SIGKILL the training process as soon as it has logged ``epoch``: mid-way through the next."""
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and f"epoch {epoch}/" in log.read_text()):
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "training did not reach the epoch in time"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_run_resumes_to_the_same_history(tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    epochs = 8
    whole, _ = start_training(tmp_path, cohort, "whole", epochs=epochs)
    assert whole.wait() == 0
    # Worker processes for the killed run: augmentation must not depend on them.
    killed, log = start_training(tmp_path, cohort, "resumed", epochs=epochs, workers=1)
    kill_during_epoch(killed, log, epoch=2)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "ckpt_resumed" / CHECKPOINT_NAME).exists()
    assert not (tmp_path / "resumed" / "history.csv").exists()
    lines_before_kill = len(log.read_text().splitlines())

    resumed, log = start_training(tmp_path, cohort, "resumed", epochs=epochs)
    assert resumed.wait() == 0
    lines = log.read_text().splitlines()[lines_before_kill:]
    assert any(line.startswith("resuming from epoch ") for line in lines)
    columns = ["epoch", "train_loss", "tune_mae", "eval_mae", "lr"]
    pd.testing.assert_frame_equal(
        read_table(tmp_path / "whole" / "history.csv")[columns],
        read_table(tmp_path / "resumed" / "history.csv")[columns],
    )
    pd.testing.assert_frame_equal(
        read_table(tmp_path / "whole" / "predictions.csv"), read_table(tmp_path / "resumed" / "predictions.csv")
    )


def test_checkpoint_of_another_configuration_is_not_resumed(
    tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    killed, log = start_training(tmp_path, cohort, "out", epochs=8)
    kill_during_epoch(killed, log, epoch=1)
    lines = run(tmp_path, cohort, training=training(epochs=2, lr=1e-3))
    assert any("another configuration" in line for line in lines)
    assert read_table(tmp_path / "out" / "history.csv")["epoch"].tolist() == [1, 2]


def test_early_stopping_keeps_the_best_tune_epoch(tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # lr 0 and no running statistics: the model never changes, so tune MAE never improves.
    lines = run(tmp_path, cohort, training=training(epochs=6, lr=0.0, patience=2, norm="instance"))
    history = read_table(tmp_path / "out" / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert any(line.startswith("early stopping after epoch 3") for line in lines)
    assert load_trained_model(tmp_path / "out" / "model.pt")[1]["epoch"] == 1


def test_fine_tuning_starts_from_init_weights(tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    run(tmp_path, cohort, out="pretrained", training=training(epochs=1))
    init = training(epochs=1, init_weights=str(tmp_path / "pretrained" / "model.pt"))
    lines = run(tmp_path, cohort, training=init)
    assert any(line.startswith("init weights") and "tensors loaded" in line for line in lines)
    assert not any(line.startswith("  mismatched") for line in lines)
    # A wider second layer keeps the first layer's tensors and logs the ones it could not take.
    lines = run(tmp_path, cohort, out="wider", model_params={"channels": [8, 32]}, training=init)
    mismatched = [line for line in lines if line.startswith("  mismatched: ")]
    assert len(mismatched) == 1 and "features.4.weight" in mismatched[0]


def test_empty_eval_set_gives_nan_eval_mae(tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    manifest, split = cohort
    run(tmp_path, (manifest, split[split["set"] != "eval"]), training=training(epochs=1))
    assert read_table(tmp_path / "out" / "history.csv")["eval_mae"].isna().all()
    assert set(read_table(tmp_path / "out" / "predictions.csv")["set"]) == {"train", "tune"}


def test_non_finite_loss_names_epoch_and_batch(tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    manifest, split = cohort
    poisoned = manifest.copy()
    subject = split.loc[split["set"] == "train", "subject"].iloc[0]
    path = tmp_path / "nan_T1.npy"
    np.save(path, np.full(SHAPE, np.nan, dtype=np.float16))
    poisoned.loc[poisoned["subject"] == subject, "tensor_T1"] = str(path)
    with pytest.raises(TrainingError, match=rf"epoch 1, batch \d+: loss is nan .*{subject}"):
        run(tmp_path, (poisoned, split), training=training(augmentation=[]))
    assert not (tmp_path / "out").exists()


def test_bad_training_config_is_named(tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # Types and bounds are config/schema.yaml's (tests/test_config.py); a caller outside the
    # workflow still learns which key is unknown or which schedule does not exist.
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        run(tmp_path, cohort, training={**training(), "epoch": 3})
    with pytest.raises(ValueError, match=re.escape("training.schedule is 'step'; valid: cosine, onecycle")):
        run(tmp_path, cohort, training=training(schedule="step"))
    with pytest.raises(ValueError, match="outside the SFCN bins"):
        run(tmp_path, cohort, "sfcn", model_params={"channels": [4, 8, 8], "age_min": 30, "age_max": 94})


def test_select_device_on_a_cpu_machine() -> None:
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        assert select_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")


def test_concurrent_jobs_claim_different_gpus(tmp_path: Path) -> None:
    first_index, first = claim_gpu(2, tmp_path)
    second_index, second = claim_gpu(2, tmp_path)
    assert (first_index, second_index) == (0, 1)
    with pytest.raises(RuntimeError, match="all 2 GPUs are claimed"):
        claim_gpu(2, tmp_path, timeout_s=0.0)
    first.close()  # a finished job releases its GPU
    index, third = claim_gpu(2, tmp_path)
    assert index == 0
    # Lock files are named by physical id: GPU "1" is the one `second` holds.
    with pytest.raises(RuntimeError):
        claim_gpu(1, tmp_path, physical_ids=["1"], timeout_s=0.0)
    for handle in (second, third):
        handle.close()


# Wider than SMALL: the GPU has time, and SFCN's MAE needs some width to fall within 5 epochs.
GPU_PARAMS = {
    "cnn3d": {"channels": [8, 16]},
    "highresnet": {"widths": [8, 16, 16], "checkpointing": True},
    "sfcn": {"channels": [16, 32, 32], "dropout": 0.0},
}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(GPU_PARAMS))
def test_gpu_bf16_smoke(tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame], name: str) -> None:
    torch.cuda.reset_peak_memory_stats()
    lines = run(
        tmp_path,
        cohort,
        name,
        device="cuda",
        model_params=GPU_PARAMS[name],
        training=training(epochs=5, amp=True, augmentation=[]),
    )
    assert any("on cuda" in line for line in lines)
    history = read_table(tmp_path / "out" / "history.csv")
    assert history["train_loss"].iloc[1:].min() < history["train_loss"].iloc[0]
    print(
        f"{name}: peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB, "
        f"{history['samples_per_s'].iloc[1:].mean():.1f} samples/s"
    )


def test_a_last_batch_of_one_does_not_break_batch_norm(
    tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """24 training subjects in batches of 23 would leave one; SFCN pools 16³ down to one voxel."""
    run(
        tmp_path,
        cohort,
        name="sfcn",
        model_params={"channels": [4, 8, 8, 8, 4]},
        training=training(epochs=1, batch_size=23),
    )
    assert read_table(tmp_path / "out" / "history.csv")["epoch"].tolist() == [1]


def test_same_seed_gives_identical_predictions_and_another_seed_other_ones(
    tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """Reproducible on one machine: augmentation, dropout, shuffling and init follow the seed only."""
    settings = training(
        epochs=2, augmentation=[*AUGMENT, {"name": "RandomAffine", "scales": 0.05, "degrees": 5, "p": 0.75}]
    )
    for out, seed in [("first", 11), ("again", 11), ("other", 12)]:
        train_run(
            *cohort,
            ["T1", "TOF_bin"],
            "cnn3d",
            {"channels": [8, 16], "dropout": 0.2},
            settings,
            outputs_in(tmp_path / out),
            tmp_path / f"ckpt_{out}" / CHECKPOINT_NAME,
            threads=1,
            seed=seed,
            device="cpu",
            log=lambda line: None,
        )
    first, again, other = (read_table(tmp_path / out / "predictions.csv") for out in ("first", "again", "other"))
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    assert not np.allclose(first["predicted"], other["predicted"])


def test_recomputed_batch_norm_statistics_are_the_training_sets_and_draw_no_random_numbers() -> None:
    from brainage.models import build_model
    from brainage.train import recompute_batch_norm_statistics

    torch.manual_seed(0)
    model = build_model("cnn3d", 1, channels=[4], dropout=0.5, age_mean=50.0, age_sd=15.0)
    images = torch.randn(9, 1, *SHAPE) * 3 + 2
    # The loader's own generator, as make_loader gives every loader: iterating draws nothing global.
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, torch.zeros(9), torch.arange(9)),
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
    )
    norm = model.features[1]
    norm.running_mean.fill_(100.0)
    state = torch.get_rng_state()
    recompute_batch_norm_statistics(model, loader, torch.device("cpu"), amp=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert norm.momentum == 0.1 and not model.training
    with torch.no_grad():
        convolved = model.features[0](images[:8])  # the batch of one (9th subject) is skipped
    # The cumulative average of the two batches' means is the mean over the 8 subjects.
    assert torch.allclose(norm.running_mean, convolved.mean(dim=(0, 2, 3, 4)), atol=1e-5)


def test_tune_curve_stays_below_predicting_the_mean_under_augmentation(
    tmp_path: Path, cohort: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """After the first 10% of epochs no epoch's tune MAE may exceed 1.5× predicting the mean."""
    settings = training(
        epochs=10,
        schedule="onecycle",
        augmentation=[
            {"name": "RandomAffine", "scales": 0.05, "degrees": 5, "translation": 2, "p": 0.75},
            {"name": "RandomFlip", "axes": ["LR"]},
            {"name": "RandomBiasField", "coefficients": 0.3, "p": 0.3},
            {"name": "RandomNoise", "std": 0.05, "p": 0.3},
        ],
        precise_bn=True,
    )
    run(tmp_path, cohort, training=settings)
    history = read_table(tmp_path / "out" / "history.csv")
    split = cohort[1]
    train_mean = split.loc[split["set"] == "train", "age"].mean()
    mean_mae = (split.loc[split["set"] == "tune", "age"] - train_mean).abs().mean()
    assert history["tune_mae"].iloc[1:].max() <= 1.5 * mean_mae, history["tune_mae"].tolist()
