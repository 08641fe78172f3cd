"""Rigid/affine registration of each subject's T1 and TOF-MRA onto its PD image, and of PD to MNI.

PD is the reference space of the whole pipeline: T1 and TOF are resampled onto the PD grid
(:class:`RegistrationOutputs`, named by the rule ``register``), and PD is registered affinely to
the MNI152 2009 template so the training grid can live in template space.
This is where IXI's MRA becomes the study's TOF (:mod:`brainage.vocabulary`).

Coordinate conventions, because they are the easy thing to get wrong:

* nibabel affines map voxel indices to RAS millimetres; ANTs (ITK) works in LPS millimetres. The
  two differ by flipping x and y: ``M_lps = F @ M_ras @ F`` with ``F = diag(-1, -1, 1, 1)``.
* ITK registration transforms map points of the *fixed* image to points of the *moving* image
  (that is what resampling needs). With PD fixed and T1 moving, the forward ``.mat`` therefore maps
  PD scanner points to T1 scanner points: exactly ``T1_from_PD``. With the template fixed and PD
  moving it maps template points to PD points: ``PD_from_template``.

Registration of T1 and TOF starts from the identity in physical space: the scans share scanner
coordinates and differ by small head motion, while the MRA is a slab whose centre of mass is far
from the head's, so centre-of-mass initialisation would throw it off by centimetres.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ants
import nibabel as nib
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from brainage.io import ImageError, atomic_path, load_image, save_image, write_json
from brainage.templates import TEMPLATE_GM, TEMPLATE_T1, TEMPLATE_WM, template_path

LPS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
TRANSFORMS = ("Rigid", "Affine")
NMI_BINS = 32

# Coarse-to-fine schedule sized for images of 30-250 voxels a side; ANTs' default 6x downsampling
# leaves a demo-scale slab (25 slices) with 4 slices, too few for a stable metric.
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS = (2, 1, 0)
ITERATIONS = (500, 250, 100)

# Template GM+WM above this probability is "brain".
TEMPLATE_BRAIN_PROBABILITY = 0.3
# The template brain is dilated by this much before it trims the PD head mask, so cortical CSF and
# a few millimetres of affine error are not cut away.
TEMPLATE_MARGIN_MM = 6.0
# Below this fraction of the head mask, the template-trimmed mask means the template fit failed.
MIN_BRAIN_FRACTION_OF_HEAD = 0.1


# --- coordinates -------------------------------------------------------------------------------


def ras_lps(matrix: np.ndarray) -> np.ndarray:
    """Convert a 4x4 point transform between RAS and LPS millimetres (the map is its own inverse)."""
    return LPS_FLIP @ np.asarray(matrix, dtype=float) @ LPS_FLIP


def nifti_to_ants(img: nib.Nifti1Image) -> ants.ANTsImage:
    """Build an ANTs image with the same voxels and the same physical placement as ``img``.

    The array keeps nibabel's (i, j, k) order; origin and direction are converted from RAS to LPS.
    """
    affine_lps = LPS_FLIP @ img.affine
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    direction = affine_lps[:3, :3] / spacing
    data = np.ascontiguousarray(np.asanyarray(img.dataobj), dtype=np.float32)
    return ants.from_numpy(data, origin=tuple(affine_lps[:3, 3]), spacing=tuple(spacing), direction=direction)


def read_ants_affine_ras(path: str | Path) -> np.ndarray:
    """Read an ANTs/ITK affine ``.mat`` file as a 4x4 point transform in RAS millimetres.

    ITK stores ``y = A (x - c) + t + c`` (matrix ``A``, translation ``t``, centre ``c``) in LPS.
    """
    transform = ants.read_transform(str(path))
    params = np.asarray(transform.parameters, dtype=float)
    centre = np.asarray(transform.fixed_parameters, dtype=float)
    if params.size != 12 or centre.size != 3:
        raise ValueError(f"{path}: expected a 3D affine transform, got {transform.transform_type}")
    matrix = params[:9].reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = params[9:] + centre - matrix @ centre
    return ras_lps(lps)


# --- similarity --------------------------------------------------------------------------------


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = NMI_BINS) -> float:
    """Studholme NMI ``(H(a) + H(b)) / H(a, b)``: 1 for independent images, 2 for identical ones."""
    joint, _, _ = np.histogram2d(np.ravel(a), np.ravel(b), bins=bins)
    joint = joint / joint.sum()

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    return (entropy(joint.sum(axis=1)) + entropy(joint.sum(axis=0))) / entropy(joint)


def similarity(fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """NMI and Pearson correlation of two images on one grid, inside ``mask``."""
    a, b = fixed[mask > 0], moving[mask > 0]
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"nmi": float("nan"), "corr": float("nan"), "voxels": int(a.size)}
    return {
        "nmi": normalized_mutual_information(a, b),
        "corr": float(np.corrcoef(a, b)[0, 1]),
        "voxels": int(a.size),
    }


# --- masks -------------------------------------------------------------------------------------


def head_mask_from_intensity(data: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Foreground mask of a PD image: Otsu threshold, largest component, holes filled, 1 voxel eroded.

    PD has bright CSF and grey matter and near-zero air, so Otsu on a lightly smoothed image
    separates head from background whatever the scanner scaling; the largest 26-connected component
    drops ghosting and noise specks, hole filling restores dark internal structures, and the light
    erosion takes off the partial-volume rim.
    """
    smoothed = ndimage.gaussian_filter(data.astype(np.float32), sigma=[2.0 / s for s in spacing])
    foreground = smoothed > threshold_otsu(smoothed)
    labels, count = ndimage.label(foreground, structure=np.ones((3, 3, 3)))
    if count == 0:
        return foreground
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == (int(np.argmax(sizes)) + 1)
    filled = ndimage.binary_fill_holes(largest)
    return ndimage.binary_erosion(filled, iterations=1)


def slab_coverage_mask(fixed: nib.Nifti1Image, moving: nib.Nifti1Image, margin_voxels: int = 1) -> np.ndarray:
    """Voxels of ``fixed`` whose centres fall inside ``moving``'s field of view (identity mapping).

    Restricting the metric to this region keeps the partial coverage of the MRA slab from biasing
    the registration; the margin keeps samples away from the slab edge, where head motion could
    push them out.
    """
    indices = np.indices(fixed.shape).reshape(3, -1).T
    to_moving = np.linalg.inv(moving.affine) @ fixed.affine
    moving_index = nib.affines.apply_affine(to_moving, indices)
    upper = np.asarray(moving.shape) - 1 - margin_voxels
    inside = np.all((moving_index >= margin_voxels) & (moving_index <= upper), axis=1)
    return inside.reshape(fixed.shape)


# --- ANTs plumbing -----------------------------------------------------------------------------


@contextlib.contextmanager
def ants_settings(threads: int, seed: int) -> Iterator[None]:
    """Fix ITK's thread count and ANTs' random seed for the calls inside the block.

    antspyx 0.6.3 has no per-call seed argument: ``ants.registration`` reads the seed from
    ``ants.config._random_seed`` (what ``ants.set_ants_deterministic`` sets, but that also forces
    one thread). ITK reads the thread variable when it first starts its thread pool, so it takes
    effect when set before the first ANTs call of a process, as in one Snakemake job per subject.
    """
    previous_seed = ants.config._random_seed
    previous_threads = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
    # antsRegistration seeds from the clock when given 0, so shift the user's seed off zero.
    ants.config._random_seed = int(seed) + 1
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))
    try:
        yield
    finally:
        ants.config._random_seed = previous_seed
        if previous_threads is None:
            os.environ.pop("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", None)
        else:
            os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = previous_threads


def linear_register(
    fixed: ants.ANTsImage,
    moving: ants.ANTsImage,
    transform: str,
    workdir: Path,
    name: str,
    fixed_mask: ants.ANTsImage | None = None,
    initialise_centres: bool = False,
) -> Path:
    """Run a Mattes-MI rigid/affine registration and return the forward ``.mat`` (fixed -> moving).

    Identity initialisation unless ``initialise_centres`` (only for subject -> template).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    result = ants.registration(
        fixed=fixed,
        moving=moving,
        type_of_transform=transform,
        initial_transform=None if initialise_centres else ["Identity"],
        outprefix=str(workdir / f"{name}_"),
        mask=fixed_mask,
        mask_all_stages=fixed_mask is not None,
        aff_metric="mattes",
        aff_sampling=NMI_BINS,
        aff_random_sampling_rate=0.25,
        aff_iterations=ITERATIONS,
        aff_shrink_factors=SHRINK_FACTORS,
        aff_smoothing_sigmas=SMOOTHING_SIGMAS,
    )
    (forward,) = result["fwdtransforms"]
    return Path(forward)


def resample_to(
    fixed: ants.ANTsImage, moving: ants.ANTsImage, transform: Path, interpolator: str = "linear"
) -> np.ndarray:
    """Resample ``moving`` onto ``fixed``'s grid through ``transform``; zero outside its field of view."""
    warped = ants.apply_transforms(
        fixed=fixed, moving=moving, transformlist=[str(transform)], interpolator=interpolator, defaultvalue=0
    )
    return warped.numpy().astype(np.float32)


def copy_atomic(source: Path, destination: Path) -> None:
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)


def prepare_template(spacing: float, out_t1: Path, out_mask: Path) -> None:
    """Write the MNI T1 template and its dilated brain mask at ``spacing`` mm, once per study.

    Subjects are registered to this coarse copy: a 1 mm template would cost more than the
    registrations themselves, and an affine fit needs no finer grid than the training grid's.
    The brain mask is built after downsampling, where its morphology is cheap.
    """
    t1 = load_image(template_path(TEMPLATE_T1))
    zooms = np.array(t1.header.get_zooms()[:3], dtype=float)
    target = np.full(3, float(spacing))
    shape = np.maximum(np.floor(np.array(t1.shape) * zooms / target).astype(int), 1)
    # Voxel centres of the coarse grid span the template's field of view, centre on centre.
    coarse = np.diag([*target, 1.0])
    coarse[:3, 3] = t1.affine[:3, 3] + (zooms * (np.array(t1.shape) - 1) - target * (shape - 1)) / 2
    to_fine = np.linalg.inv(t1.affine) @ coarse
    smooth = (target / zooms - 1).clip(min=0) / 2

    def resample(data: np.ndarray) -> np.ndarray:
        blurred = ndimage.gaussian_filter(data.astype(np.float32), smooth)
        return ndimage.affine_transform(blurred, to_fine[:3, :3], to_fine[:3, 3], output_shape=tuple(shape), order=1)

    brain_probability = resample(
        load_image(template_path(TEMPLATE_GM)).get_fdata() + load_image(template_path(TEMPLATE_WM)).get_fdata()
    )
    brain = ndimage.binary_fill_holes(brain_probability > TEMPLATE_BRAIN_PROBABILITY * brain_probability.max())
    brain = ndimage.binary_dilation(brain, iterations=max(1, round(TEMPLATE_MARGIN_MM / float(spacing))))
    save_image(nib.Nifti1Image(resample(t1.get_fdata()), coarse), out_t1)
    save_image(nib.Nifti1Image(brain.astype(np.uint8), coarse), out_mask)


# --- the per-subject rule ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RegistrationOutputs:
    """The files :func:`register_subject` writes; the rule ``register`` names them."""

    pd: Path  # PD, canonical float32: the reference grid
    t1: Path  # T1 on the PD grid
    tof: Path  # the MRA on the PD grid, zero outside the slab: from here on it is TOF
    mask: Path  # brain mask on the PD grid, uint8
    t1_transform: Path  # ANTs .mat, T1_from_PD
    tof_transform: Path  # ANTs .mat, TOF_from_PD
    summary: Path  # JSON: transforms in RAS, similarity, mask volume
    template_transform: Path | None = None  # ANTs .mat, PD_from_template; with the template only


def register_subject(
    subject: str,
    pd: Path,
    t1: Path,
    mra: Path,
    outputs: RegistrationOutputs,
    transform: str = "Rigid",
    template: tuple[Path, Path] | None = None,
    threads: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Register T1 and TOF-MRA onto PD (and PD onto MNI) for one subject; write ``outputs``.

    Returns the content of ``outputs.summary``. ``outputs.template_transform`` is written when,
    and must be given exactly when, ``template`` is.

    ``template``: the (T1, brain mask) files of :func:`prepare_template`; without it the grid
    stays the subject's PD space, as the researcher had it.

    The brain mask is the PD head mask (:func:`head_mask_from_intensity`); with ``template`` it is
    further trimmed to the template's GM+WM mask (dilated by 6 mm) warped back to PD, which removes
    scalp and neck, whose fat is bright in TOF and would otherwise pass as vessels.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"subject {subject}: unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    if (template is None) != (outputs.template_transform is None):
        raise ValueError(
            f"subject {subject}: a template needs outputs.template_transform and only a template does "
            f"(template {template}, template_transform {outputs.template_transform})"
        )
    with ants_settings(threads, seed):
        return _register_subject(subject, Path(pd), Path(t1), Path(mra), outputs, transform, template, threads, seed)


def _register_subject(
    subject: str,
    pd: Path,
    t1: Path,
    mra: Path,
    outputs: RegistrationOutputs,
    transform: str,
    template: tuple[Path, Path] | None,
    threads: int,
    seed: int,
) -> dict[str, Any]:
    start = time.perf_counter()
    pd_img = load_image(pd, subject)
    t1_img = load_image(t1, subject)
    mra_img = load_image(mra, subject)
    pd_img = nib.Nifti1Image(np.asanyarray(pd_img.dataobj).astype(np.float32), pd_img.affine)
    pd_data = pd_img.get_fdata(dtype=np.float32)
    spacing = tuple(float(s) for s in pd_img.header.get_zooms()[:3])

    pd_ants = nifti_to_ants(pd_img)
    t1_ants = nifti_to_ants(t1_img)
    mra_ants = nifti_to_ants(mra_img)
    slab = slab_coverage_mask(pd_img, mra_img)
    if slab.sum() < 27:
        raise ImageError(mra, "MRA slab does not overlap the PD field of view", subject)

    with tempfile.TemporaryDirectory(prefix=f"{subject}_reg_") as tmp:
        work = Path(tmp)
        t1_mat = linear_register(pd_ants, t1_ants, transform, work, "T1")
        slab_ants = nifti_to_ants(nib.Nifti1Image(slab.astype(np.float32), pd_img.affine))
        tof_mat = linear_register(pd_ants, mra_ants, transform, work, "TOF", fixed_mask=slab_ants)
        t1_reg = resample_to(pd_ants, t1_ants, t1_mat)
        tof_reg = resample_to(pd_ants, mra_ants, tof_mat)
        ones = mra_ants.new_image_like(np.ones(mra_img.shape, dtype=np.float32))
        coverage = resample_to(pd_ants, ones, tof_mat) > 0.999

        mask = head_mask_from_intensity(pd_data, spacing)
        mask_method = "PD intensity (Otsu, largest component, filled, eroded 1 voxel)"
        result: dict[str, Any] = {"subject": subject, "transform": transform, "threads": threads, "seed": seed}
        if template:
            tmpl, tmpl_mask = (nifti_to_ants(load_image(path)) for path in template)
            tmpl_mat = linear_register(tmpl, pd_ants, "Affine", work, "template", initialise_centres=True)
            result["PD_from_template"] = read_ants_affine_ras(tmpl_mat).tolist()
            # Inverse direction: pull the template mask onto the PD grid.
            brain = (
                ants.apply_transforms(
                    fixed=pd_ants,
                    moving=tmpl_mask,
                    transformlist=[str(tmpl_mat)],
                    whichtoinvert=[True],
                    interpolator="nearestNeighbor",
                ).numpy()
                > 0.5
            )
            trimmed = mask & brain
            if trimmed.sum() < MIN_BRAIN_FRACTION_OF_HEAD * mask.sum():
                raise ImageError(
                    pd,
                    f"template brain mask covers only {trimmed.sum()} of {mask.sum()} head voxels: "
                    "PD-to-template registration failed",
                    subject,
                )
            mask = trimmed
            mask_method += f" within template GM+WM > {TEMPLATE_BRAIN_PROBABILITY} dilated {TEMPLATE_MARGIN_MM} mm"
            copy_atomic(tmpl_mat, outputs.template_transform)
        copy_atomic(t1_mat, outputs.t1_transform)
        copy_atomic(tof_mat, outputs.tof_transform)
        result["T1_from_PD"] = read_ants_affine_ras(t1_mat).tolist()
        result["TOF_from_PD"] = read_ants_affine_ras(tof_mat).tolist()

    affine = pd_img.affine
    save_image(pd_img, outputs.pd)
    save_image(nib.Nifti1Image(t1_reg, affine), outputs.t1)
    save_image(nib.Nifti1Image(tof_reg, affine), outputs.tof)
    save_image(nib.Nifti1Image(mask.astype(np.uint8), affine), outputs.mask)

    voxel_ml = float(np.prod(spacing)) / 1000.0
    result.update(
        brain_mask_method=mask_method,
        brain_mask_voxels=int(mask.sum()),
        brain_mask_ml=float(mask.sum()) * voxel_ml,
        similarity={
            "T1": similarity(pd_data, t1_reg, mask),
            "TOF": similarity(pd_data, tof_reg, mask & coverage),
        },
        seconds=time.perf_counter() - start,
    )
    write_json(result, outputs.summary)
    return result
