"""File I/O shared by every stage: atomic writes and validated NIfTI loading.

Every output goes through :func:`atomic_path`, so a job killed mid-write leaves either the old
file or no file, never a truncated one that looks whole. Every image goes through
:func:`load_image`, so a bad file is reported once, the same way, naming the subject and file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd


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


def load_image(path: str | Path, subject: str | None = None) -> nib.Nifti1Image:
    """Load a NIfTI image, check it, and return it in the closest canonical (RAS+) orientation.

    Checks: readable, 3D, finite, non-degenerate affine, not empty. Raises :class:`ImageError`
    naming the subject, the file and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "file does not exist", subject)
    if path.stat().st_size == 0:
        raise ImageError(path, "file is empty (0 bytes)", subject)
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as error:  # nibabel raises many types for truncated or corrupt files
        raise ImageError(path, f"cannot be read ({type(error).__name__}: {error})", subject) from error
    if data.ndim != 3:
        raise ImageError(path, f"image is {data.ndim}D with shape {data.shape}, expected 3D", subject)
    if min(data.shape) < 2:
        raise ImageError(path, f"image shape {data.shape} is degenerate", subject)
    if not np.all(np.isfinite(data)):
        raise ImageError(path, "image contains NaN or infinite values", subject)
    if not np.any(data):
        raise ImageError(path, "image is empty (all zeros)", subject)
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise ImageError(path, "affine is singular or not finite", subject)
    img = nib.Nifti1Image(data, affine, img.header)
    return nib.as_closest_canonical(img)
