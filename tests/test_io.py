"""Atomic writes and validated image loading."""

from __future__ import annotations

import errno
import re
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.io import ImageError, atomic_path, load_image, save_array


def test_atomic_write_gets_ordinary_permissions(tmp_path: Path) -> None:
    save_array(np.zeros(3), tmp_path / "a.npy")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.npy").stat().st_mode & 0o777 == 0o666 & ~umask


def test_disk_full_mid_write_leaves_no_partial_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tensor write that runs out of space fails; the previous file survives; a retry succeeds."""
    target = tmp_path / "T1.npy"
    save_array(np.ones(4, np.float16), target)
    real_save = np.save

    def half_then_full(file, array, *args, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        save_array(np.zeros(1000, np.float16), target)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["T1.npy"]
    assert np.array_equal(np.load(target), np.ones(4, np.float16))

    monkeypatch.setattr(np, "save", real_save)
    save_array(np.zeros(1000, np.float16), target)
    assert np.load(target).shape == (1000,)


def test_failed_block_removes_the_temporary_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.csv") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
        (lambda p: nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 2), np.float32), np.eye(4)), p), "4D"),
        (lambda p: nib.save(nib.Nifti1Image(np.ones((4, 4), np.float32), np.eye(4)), p), "2D"),
        (lambda p: nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), p), "NaN"),
        (lambda p: nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), p), "all zeros"),
    ],
)
def test_bad_image_is_named_with_subject_file_and_reason(tmp_path: Path, write, reason: str) -> None:
    path = tmp_path / "IXI002-Guys-0828-T1.nii.gz"
    write(path)
    with pytest.raises(ImageError, match=re.escape(reason)) as caught:
        load_image(path, "IXI002")
    assert "IXI002" in str(caught.value) and str(path) in str(caught.value)


def test_image_is_returned_in_canonical_orientation(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4) + 1
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(data, flipped), tmp_path / "x.nii.gz")
    image = load_image(tmp_path / "x.nii.gz")
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    assert np.array_equal(np.asarray(image.dataobj), data[::-1])
