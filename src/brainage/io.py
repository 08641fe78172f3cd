"""File I/O shared by every stage: atomic writes and validated NIfTI loading.

Every output goes through :func:`atomic_path`, so a job killed mid-write leaves either the old
file or no file, never a truncated one that looks whole. Every image goes through
:func:`load_image`, so a bad file is reported once, the same way, naming the subject and file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.openers import ImageOpener

# mkstemp creates files readable by the owner only; outputs get the usual permissions instead.
_UMASK = os.umask(0)
os.umask(_UMASK)


class ImageError(ValueError):
    """A raw or derived image that cannot be used, with the subject and file it came from."""

    def __init__(self, path: str | Path, reason: str, subject: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.subject = subject
        who = f"subject {subject}: " if subject else ""
        super().__init__(f"{who}{self.path}: {reason}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.npy``) because some writers
    choose their format from the extension.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_UMASK)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(obj: Any, path: str | Path) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write a CSV (or TSV, by extension) without the index: tables are keyed by columns."""
    sep = "\t" if str(path).endswith(".tsv") else ","
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep=sep, index=False, float_format="%.6g")


def read_table(path: str | Path) -> pd.DataFrame:
    sep = "\t" if str(path).endswith(".tsv") else ","
    return pd.read_csv(path, sep=sep, dtype={"subject": str})


def save_array(array: np.ndarray, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def save_image(img: nib.Nifti1Image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """Save a matplotlib figure; the format follows the extension (PNG, PDF)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip("."), **kwargs)


# Larger than any brain MRI the study reads (IXI's largest is the MRA, 512x512x100, about 2^24.6
# voxels) with 10x headroom, yet a bound on what one load may allocate (2 GiB as float64), so a
# header claiming a volume near the machine's memory is refused before a buffer is made for it.
MAX_VOXELS = 2**28

# Deflate cannot do better than 1032:1 (a 258-byte match costs at least 2 bits), so a gzip file
# whose header declares more than 1032 times the file's size cannot hold that data: it is cut
# short or its header lies. A tighter bound would refuse valid files: measured with nibabel's
# default compression, real-size synthetic raw images are 1.7-1.9:1, a brain mask 9:1, a vessel
# mask of 0.1% of voxels 146:1 and all zeros 229:1 (about 1030:1 at gzip -9), and load_image also
# reads the pipeline's own sparse masks. Above the ceiling only MAX_VOXELS bounds the allocation.
MAX_GZIP_RATIO = 1032

# ITK's NIfTI reader accepts direction cosines only when R @ R.T is the identity to 1e-4
# (itkNiftiImageIO.cxx); ANTs writes and reads the registered outputs through ITK, so an input
# beyond that tolerance cannot complete preprocessing. A scanner affine stored as float32 is
# orthonormal to about 1e-7, well inside.
SHEAR_TOLERANCE = 1e-4

_COMPRESSED_SUFFIXES = frozenset(suffix for suffix in ImageOpener.compress_ext_map if suffix)


def load_image(path: str | Path, subject: str | None = None) -> nib.Nifti1Image:
    """Load a NIfTI image, check it, and return it in the closest canonical (RAS+) orientation.

    Checks, in this order: readable; from the header alone, before any voxel is decoded (so a
    lying header costs no memory): 3D, a real integer or float type, data the file can hold,
    a finite non-singular affine with positive voxel sizes and no shear; then the decoded
    voxels: finite, not all zero. Raises :class:`ImageError` naming the subject, the file and
    the reason.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "file does not exist", subject)
    if path.stat().st_size == 0:
        raise ImageError(path, "file is empty (0 bytes)", subject)
    try:
        img = nib.load(path)
        problem = _header_problem(img)
        if problem is not None:
            raise ImageError(path, problem, subject)
        data = np.asanyarray(img.dataobj)
    except ImageError:
        raise
    except Exception as error:  # nibabel raises many types for truncated or corrupt files
        raise ImageError(path, f"cannot be read ({type(error).__name__}: {error})", subject) from error
    if not np.all(np.isfinite(data)):
        raise ImageError(path, "image contains NaN or infinite values", subject)
    if not np.any(data):
        raise ImageError(path, "image is empty (all zeros)", subject)
    img = nib.Nifti1Image(data, img.affine, img.header)
    return nib.as_closest_canonical(img)


def _header_problem(img: nib.Nifti1Image) -> str | None:
    """What is wrong with ``img`` that its header shows, or None; reads no voxel data."""
    shape = img.shape
    if len(shape) != 3:
        return f"image is {len(shape)}D with shape {shape}, expected 3D"
    if min(shape) < 2:
        return f"image shape {shape} is degenerate"
    if img.get_data_dtype().kind not in "iuf":  # RGB and RGBA are structured ("V"), complex is "c"
        label = img.header.get_value_label("datatype")
        return f"data type {label} is not supported (expected real integer or float voxels)"
    return _size_problem(img) or _geometry_problem(img)


def _size_problem(img: nib.Nifti1Image) -> str | None:
    """Whether the voxel data the header declares is implausible or more than its file can hold."""
    voxels = math.prod(img.shape)
    if voxels > MAX_VOXELS:
        return (
            f"header declares {voxels} voxels {img.shape}, more than the {MAX_VOXELS} any brain MRI needs (MAX_VOXELS)"
        )
    data_file = Path(img.file_map["image"].filename)
    size = data_file.stat().st_size
    declared = img.dataobj.offset + voxels * img.get_data_dtype().itemsize
    suffix = data_file.suffix.lower()
    if suffix == ".gz" and declared > MAX_GZIP_RATIO * size:
        return (
            f"header declares {declared} bytes but the file is {size} bytes of gzip, which holds at most "
            f"{MAX_GZIP_RATIO} times that: the file is cut short or its header is wrong"
        )
    if suffix not in _COMPRESSED_SUFFIXES and declared > size:
        return (
            f"header declares {declared} bytes but the file is {size} bytes: "
            "the file is cut short or its header is wrong"
        )
    return None


def _geometry_problem(img: nib.Nifti1Image) -> str | None:
    """Whether the affine or the stored voxel sizes cannot place the voxels in millimetres."""
    linear = img.affine[:3, :3]
    from_affine = np.linalg.norm(linear, axis=0)
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(linear)) < 1e-6:
        return f"affine is singular or not finite (voxel size {_mm(from_affine)} mm)"
    pixdim = _stored_header(img)["pixdim"][1:4]
    if not np.all(pixdim > 0):
        return f"voxel size {_mm(pixdim)} mm (header pixdim) is zero or negative"
    cosines = linear / from_affine
    shear = float(np.abs(cosines @ cosines.T - np.eye(3)).max())
    if shear > SHEAR_TOLERANCE:
        return (
            f"affine is sheared (direction cosines off orthonormal by {shear:.2g} > {SHEAR_TOLERANCE:g}); "
            "ITK reads only orthonormal ones"
        )
    return None


def _stored_header(img: nib.Nifti1Image) -> nib.Nifti1Header:
    """The header as the file stores it: nibabel's loader silently turns pixdim 0 and -1 into 1."""
    holder = img.file_map.get("header", img.file_map["image"])  # one file for .nii, two for .hdr/.img
    with ImageOpener(holder.filename) as handle:
        return type(img.header).from_fileobj(handle, check=False)


def _mm(values: np.ndarray) -> str:
    """Voxel sizes as a reason shows them: ``(1, 0, 1.5)``."""
    return "(" + ", ".join(f"{value:g}" for value in values) + ")"
