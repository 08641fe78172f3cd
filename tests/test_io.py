"""Atomic writes and validated image loading."""

from __future__ import annotations

import errno
import gzip
import os
import re
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage import io
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
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.csv") as tmp:
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


IDENTITY = np.eye(4)  # write_raw_nifti's default sform (a module constant: defaults are evaluated once)


def write_raw_nifti(
    path: Path,
    shape: tuple[int, ...] = (4, 5, 6),
    dtype: type = np.float32,
    voxels: bytes | None = None,
    sform: np.ndarray | None = IDENTITY,
    qform: bool = False,
    pixdim: tuple[float, float, float] = (1.0, 1.0, 1.0),
    level: int = 6,
) -> Path:
    """Write header bytes and ``voxels`` as they are, so the header may lie about the data.

    nibabel would fix pixdim and refuse a header that disagrees with the data; this does not.
    ``voxels`` defaults to a full ramp of ``shape``; ``.gz`` paths are compressed at ``level``.
    """
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    if sform is not None:
        header.set_sform(sform, code=1)
    if qform:
        header.set_qform(np.eye(4), code=1)
    header["pixdim"][1:4] = pixdim
    header["vox_offset"] = 352
    if voxels is None:
        voxels = (np.arange(int(np.prod(shape))) % 100 + 1).astype(dtype).tobytes()
    raw = header.binaryblock + b"\0" * 4 + voxels
    path.write_bytes(gzip.compress(raw, compresslevel=level) if path.name.endswith(".gz") else raw)
    return path


def load_peak_bytes(path: Path) -> tuple[str, int]:
    """Load ``path``, expecting ImageError; return its reason and the peak bytes allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as caught:
            load_image(path, "IXI002")
        return caught.value.reason, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["claims.nii.gz", "claims.nii"])
@pytest.mark.parametrize(
    ("side", "reason"),
    [
        (1000, "header declares 1000000000 voxels (1000, 1000, 1000), more than the 268435456"),  # 1 GB
        (600, "header declares 216000352 bytes but the file is {size} bytes"),  # under MAX_VOXELS: the file size tells
    ],
    ids=["1GB-over-MAX_VOXELS", "216MB-over-file-size"],
)
def test_header_claiming_more_data_than_the_file_holds_is_refused_before_allocating(
    tmp_path: Path, name: str, side: int, reason: str
) -> None:
    """A ~100-byte file whose header claims a huge uint8 volume never makes the loader allocate it."""
    path = write_raw_nifti(tmp_path / name, shape=(side, side, side), dtype=np.uint8, voxels=b"\1" * 64)
    found, peak = load_peak_bytes(path)
    assert found.startswith(reason.format(size=path.stat().st_size))
    assert peak < 16 * 2**20


def test_gzip_bound_is_deflates_ceiling(tmp_path: Path) -> None:
    """A valid, nearly empty mask at gzip -9 (~1000:1) loads; the same stream under a header declaring twice
    the voxels is past what deflate can reach (1032:1), so it is refused before decoding."""
    shape = (128, 128, 128)
    sparse = np.zeros(shape, np.uint8)
    sparse[64, 64, 64] = 1
    voxels = sparse.tobytes(order="F")
    valid = write_raw_nifti(tmp_path / "mask.nii.gz", shape=shape, dtype=np.uint8, voxels=voxels, level=9)
    assert (352 + sparse.size) / valid.stat().st_size > 900
    assert load_image(valid).get_fdata().sum() == 1
    doubled = write_raw_nifti(tmp_path / "lie.nii.gz", shape=(256, 128, 128), dtype=np.uint8, voxels=voxels, level=9)
    reason, _ = load_peak_bytes(doubled)
    assert "header declares" in reason and "at most 1032 times" in reason


def test_voxel_count_above_the_cap_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io, "MAX_VOXELS", 100)
    reason, _ = load_peak_bytes(write_raw_nifti(tmp_path / "x.nii.gz", shape=(4, 5, 6)))
    assert reason == "header declares 120 voxels (4, 5, 6), more than the 100 any brain MRI needs (MAX_VOXELS)"


def test_only_real_integer_and_float_voxels_are_accepted(tmp_path: Path) -> None:
    """RGB, RGBA and complex images are named with their type; every real integer and float type loads."""
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgba = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    rgb["R"] = rgba["R"] = 5
    refused = {"RGB": rgb, "RGBA": rgba}
    refused |= {name: np.ones((4, 4, 4), name) for name in ["complex64", "complex128"]}
    for label, data in refused.items():
        path = tmp_path / f"{label}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        with pytest.raises(ImageError, match=re.escape(f"data type {label} is not supported")) as caught:
            load_image(path, "IXI002")
        assert str(path) in str(caught.value)
    for name in ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]:
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), name), np.eye(4), dtype=name), path)
        assert load_image(path).get_data_dtype() == np.dtype(name)


@pytest.mark.parametrize(("sform", "qform"), [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_zero_or_negative_voxel_size_in_the_header_is_refused(
    tmp_path: Path, sform: bool, qform: bool, bad: float
) -> None:
    """nibabel reads pixdim 0 as 1 mm and -1 as 1 mm (logging only); the header as stored is checked instead."""
    path = write_raw_nifti(
        tmp_path / "x.nii.gz", sform=np.eye(4) if sform else None, qform=qform, pixdim=(1.0, bad, 1.0)
    )
    reason = f"voxel size (1, {bad:g}, 1) mm (header pixdim) is zero or negative"
    with pytest.raises(ImageError, match=re.escape(reason)):
        load_image(path)


def test_zero_voxel_size_in_the_affine_is_named(tmp_path: Path) -> None:
    """A zero column of the affine is a zero voxel size in the frame ITK and nibabel use; the reason says which."""
    path = write_raw_nifti(tmp_path / "x.nii.gz", sform=np.diag([2.0, 0.0, 2.0, 1.0]))
    with pytest.raises(ImageError, match=re.escape("affine is singular or not finite (voxel size (2, 0, 2) mm)")):
        load_image(path)


def test_sheared_affine_is_refused_and_float32_rounding_is_not(tmp_path: Path) -> None:
    """ITK reads only direction cosines orthonormal to 1e-4; a scanner affine rounded to float32 is well inside."""
    sheared = np.eye(4)
    sheared[0, 1] = 0.2
    path = write_raw_nifti(tmp_path / "sheared.nii.gz", sform=sheared)
    reason = "affine is sheared (direction cosines off orthonormal by 0.19 > 0.0001); ITK reads only orthonormal ones"
    with pytest.raises(ImageError, match=re.escape(reason)):
        load_image(path)
    angle = np.deg2rad(7.0)
    rotated = np.eye(4)
    rotated[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    rotated[:3, :3] = (rotated[:3, :3] * [1.2, 0.9, 1.5]).astype(np.float32)
    load_image(write_raw_nifti(tmp_path / "rotated.nii.gz", sform=rotated))
