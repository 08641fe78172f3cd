"""Architectures, parameter counts, initialization, SFCN soft labels and init-weight loading."""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from brainage.models import (
    CNN3D,
    NORMS,
    SFCN,
    HighResNet,
    ResidualBlock,
    build_model,
    count_parameters,
    load_init_weights,
    pad_channels,
    sfcn_kl_loss,
    sfcn_soft_labels,
)

torch.set_num_threads(1)

# Narrow widths that a 16×20×16 grid survives (two poolings for SFCN).
SMALL = {"cnn3d": {"channels": [4, 8]}, "highresnet": {"widths": [4, 8, 8]}, "sfcn": {"channels": [4, 8, 8]}}


def test_parameter_counts_at_published_widths() -> None:
    highres = count_parameters(build_model("highresnet", 1))
    assert highres == 803_697
    assert 0.7e6 <= highres <= 0.9e6
    sfcn = count_parameters(build_model("sfcn", 1))  # 80 one-year bins over [14, 94)
    assert sfcn == 2_955_536
    assert abs(sfcn - 2.95e6) / 2.95e6 < 0.02
    # The paper's 40 two-year bins: the count of its published sfcn.py.
    assert count_parameters(build_model("sfcn", 1, bin_width=2.0)) == 2_952_936
    assert count_parameters(build_model("cnn3d", 1)) == 294_601


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("in_channels", [1, 2])
def test_output_is_one_age_per_subject(name: str, norm: str, in_channels: int) -> None:
    model = build_model(name, in_channels, norm, **SMALL[name])
    model.train()
    out = model(torch.randn(2, in_channels, 16, 20, 16))
    assert out.shape == (2,)
    assert torch.isfinite(out).all()
    out.sum().backward()


def test_unknown_model_and_norm_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="cnn3d, highresnet, sfcn"):
        build_model("resnet", 1)
    with pytest.raises(ValueError, match="batch, group, instance"):
        build_model("cnn3d", 1, norm="layer")
    with pytest.raises(ValueError, match="bad parameters"):
        build_model("cnn3d", 1, widths=[4])


def test_group_norm_uses_a_group_count_that_divides_the_channels() -> None:
    model = build_model("cnn3d", 1, "group", channels=[6, 32])
    groups = [m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert groups == [2, 8]


def test_kaiming_fan_out_initialization() -> None:
    torch.manual_seed(0)
    model = CNN3D(1, channels=[32, 64])
    conv = model.features[4]
    expected = math.sqrt(2.0 / (64 * 27))  # fan_out = out_channels × kernel volume
    assert abs(conv.weight.std().item() - expected) / expected < 0.05
    assert abs(conv.weight.mean().item()) < expected * 0.05
    norm = model.features[5]
    assert torch.equal(norm.weight, torch.ones(64)) and torch.equal(norm.bias, torch.zeros(64))


@pytest.mark.parametrize("name", ["cnn3d", "highresnet"])
def test_fresh_regression_model_predicts_the_mean_age(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 1, age_mean=47.0, age_sd=16.0, **SMALL[name]).eval()
    out = model(torch.randn(3, 1, 16, 20, 16))
    assert torch.allclose(out, torch.full((3,), 47.0), atol=1.0)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_predicted_age_stays_float32_under_bf16_autocast(name: str) -> None:
    model = build_model(name, 1, **SMALL[name]).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 1, 16, 20, 16))
    assert out.dtype == torch.float32


def test_zero_padded_shortcut_has_no_parameters() -> None:
    block = ResidualBlock(4, 8, dilation=2, norm="batch")
    convs = 4 * 8 * 27 + 8 * 8 * 27
    norms = 2 * 4 + 2 * 8
    assert count_parameters(block) == convs + norms
    for module in block.modules():
        if isinstance(module, torch.nn.Conv3d):
            torch.nn.init.zeros_(module.weight)
    x = torch.randn(2, 4, 6, 6, 6)
    out = block(x)
    assert torch.equal(out[:, :4], x)
    assert torch.equal(out[:, 4:], torch.zeros(2, 4, 6, 6, 6))
    assert pad_channels(x, 4) is x


def test_highresnet_uses_three_dilations_per_width() -> None:
    model = HighResNet(1)
    dilations = [b.units[2].dilation[0] for b in model.blocks]
    widths = [b.out_channels for b in model.blocks]
    assert dilations == [1, 1, 1, 2, 2, 2, 4, 4, 4]
    assert widths == [16, 16, 16, 32, 32, 32, 64, 64, 64]


def test_checkpointing_matches_plain_forward_backward_and_norm_statistics() -> None:
    torch.manual_seed(0)
    plain = HighResNet(1, widths=[4, 8, 8])
    checkpointed = HighResNet(1, widths=[4, 8, 8], checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 12, 12, 12)
    outputs = []
    for model in (plain, checkpointed):
        model.train()
        out = model(x)
        out.sum().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[0], outputs[1])
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    # The backward re-run must not move BatchNorm running statistics a second time.
    for (name, a), b in zip(plain.named_buffers(), checkpointed.buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_sfcn_soft_labels_are_normalized_gaussians_around_the_age() -> None:
    centers = torch.arange(14, 94, dtype=torch.float32) + 0.5
    labels = sfcn_soft_labels(torch.tensor([30.2, 14.1, 93.9]), centers, sigma=1.0)
    assert labels.shape == (3, 80)
    torch.testing.assert_close(labels.sum(1), torch.ones(3))
    assert labels[0].argmax().item() == 16  # bin [30, 31)
    assert abs((labels[0] @ centers).item() - 30.2) < 0.05
    with pytest.raises(ValueError, match="outside the SFCN bins"):
        sfcn_soft_labels(torch.tensor([150.0]), centers)


def test_sfcn_loss_and_expected_age() -> None:
    torch.manual_seed(0)
    model = SFCN(1, channels=[4, 8, 8], age_min=20, age_max=80).eval()
    x = torch.randn(2, 1, 16, 20, 16)
    log_probs = model.log_probs(x)
    assert log_probs.shape == (2, 60)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(2))
    torch.testing.assert_close(model(x), log_probs.exp() @ model.bin_centers)
    labels = sfcn_soft_labels(torch.tensor([35.0, 61.0]), model.bin_centers)
    assert sfcn_kl_loss(labels.clamp_min(1e-30).log(), labels).item() == pytest.approx(0.0, abs=1e-5)
    assert sfcn_kl_loss(log_probs, labels).item() > 0.1


@pytest.mark.parametrize("norm", ["group", "instance"])
def test_norm_over_a_single_voxel_is_refused(norm: str) -> None:
    # Four poolings take 16×20×16 to one voxel, where 8 channels in 8 groups normalize to a constant.
    model = build_model("sfcn", 1, norm, channels=[4, 8, 8, 8, 8])
    for mode in (model.train, model.eval):
        mode()
        with pytest.raises(ValueError, match=r"over a \(1, 1, 1\) map"):
            model(torch.randn(2, 1, 16, 20, 16))
    build_model("sfcn", 1, "batch", channels=[4, 8, 8, 8, 8])(torch.randn(2, 1, 16, 20, 16))
    # Groups of several channels are still fine on one voxel.
    build_model("sfcn", 1, "group", channels=[4, 8, 8, 8, 16])(torch.randn(2, 1, 16, 20, 16))


def test_sfcn_rejects_a_range_that_is_not_whole_bins() -> None:
    with pytest.raises(ValueError, match="whole number"):
        SFCN(1, age_min=14, age_max=94.5)


def test_init_weights_load_matching_tensors_and_report_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    source = CNN3D(1, channels=[4, 8])
    state = {**source.state_dict(), "extra.weight": torch.zeros(3)}
    path = tmp_path / "pretrained.pt"
    torch.save({"model": state, "epoch": 3}, path)
    target = CNN3D(1, channels=[4, 16])
    before = target.features[4].weight.clone()
    report = load_init_weights(target, path)
    assert "features.0.weight" in report["matched"]
    assert torch.equal(target.features[0].weight, source.features[0].weight)
    assert "features.4.weight" in report["mismatched"]
    assert torch.equal(target.features[4].weight, before)
    assert report["unexpected"] == ["extra.weight"]
    assert report["missing"] == []
    assert capsys.readouterr().out == ""  # the caller logs the report
    # A bare state dict works too.
    torch.save(source.state_dict(), path)
    assert load_init_weights(CNN3D(1, channels=[4, 8]), path)["mismatched"] == []


class _RunsCode:
    """A pickle payload that would create a file if unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_init_weights_reject_code_and_non_weight_files(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode(marker)}, evil)
    with pytest.raises(ValueError, match=re.escape("evil.pt: not a safe PyTorch weights file")):
        load_init_weights(CNN3D(1, channels=[4]), evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(ValueError, match=re.escape("raw.pkl")):
        load_init_weights(CNN3D(1, channels=[4]), raw)
    assert not marker.exists()
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=re.escape("notes.pt")):
        load_init_weights(CNN3D(1, channels=[4]), text)
    with pytest.raises(ValueError, match="does not exist"):
        load_init_weights(CNN3D(1, channels=[4]), tmp_path / "missing.pt")
