"""The TOF-MRA's arterial tree: grown per subject, pruned and made tortuous by age, rasterized."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from brainage.synth.ageing import age_fraction

# Signal the rasterized tree must reach for a voxel to count as vessel in the truth mask.
_VISIBLE_SIGNAL = 0.15
_MIN_RADIUS_MM = 0.3
_CHILD_RADIUS_RATIO = 0.72
# Path length from the skull base to where the trunks start (carotid siphon), for inflow decay.
_TRUNK_START_MM = 30.0
# Vessels stay inside this ellipsoid (head mm): the brain, a little inside its surface.
_BRAIN_ELLIPSOID_CENTRE = np.array([0.0, -17.0, 6.0])
_BRAIN_ELLIPSOID_AXES = np.array([64.0, 84.0, 68.0])


@dataclass(frozen=True)
class _Vessel:
    """One vessel segment: a polyline in head mm, its radius, and path length from the root."""

    points: np.ndarray
    radius: float
    start_distance: float


def _main_arteries(rng: np.random.Generator) -> list[tuple[np.ndarray, float, int]]:
    """Circle-of-Willis roots and main trunks: (waypoints, radius mm, branches fanning from the end).

    Waypoints are template mm, sketched from the anatomy (ICAs and basilar rising from the
    skull base; MCA out along the Sylvian fissure; ACA up and back over the corpus callosum;
    PCA back to the occipital lobe), jittered per subject except where trunks join.
    """
    trunks: list[tuple[list[tuple[float, float, float]], float, int]] = [
        ([(0, -32, -50), (0, -26, -36), (0, -18, -22)], 1.6, 0),  # basilar
    ]
    for s in (-1.0, 1.0):
        ica_top = (13 * s, 2, -18)
        trunks += [
            ([(16 * s, 2, -50), (15 * s, 5, -32), ica_top], 2.0, 0),  # internal carotid
            ([ica_top, (28 * s, 4, -16), (40 * s, 2, -8), (46 * s, -8, 4)], 1.5, 3),  # middle cerebral
            # anterior cerebral
            ([ica_top, (5 * s, 14, -12), (3 * s, 27, 2), (3 * s, 30, 22), (3 * s, 12, 42), (3 * s, -18, 54)], 1.2, 2),
            ([(2 * s, -18, -22), (14 * s, -28, -15), (24 * s, -52, -6), (16 * s, -80, 4)], 1.2, 2),  # posterior
            ([ica_top, (9 * s, -9, -19), (2 * s, -18, -22)], 0.6, 0),  # posterior communicating
        ]
    trunks.append(([(-5, 14, -12), (5, 14, -12)], 0.6, 0))  # anterior communicating
    result = []
    for waypoints, radius, end_branches in trunks:
        points = np.asarray(waypoints, dtype=float)
        points[1:-1] += rng.normal(0.0, 1.5, points[1:-1].shape)
        result.append((points, radius, end_branches))
    return result


def _arterial_tree(bio_age: float, rng: np.random.Generator) -> list[_Vessel]:
    """Grow the subject's arterial tree: trunks, then recursive branching outward and upward.

    With age, small branches (radius < 1 mm) are pruned more often (rarefaction) and every
    segment meanders more (tortuosity).
    """
    a = max(age_fraction(bio_age), 0.0)
    prune_probability = 0.05 + 0.6 * a
    meander = 0.03 + 0.12 * a
    vessels: list[_Vessel] = []

    def grow(start: np.ndarray, direction: np.ndarray, radius: float, length: float, distance: float) -> None:
        if radius < _MIN_RADIUS_MM or (radius < 1.0 and rng.random() < prune_probability):
            return
        end = _inside_brain(start + direction * length)
        points = _meander(start, end, meander, rng)
        vessels.append(_Vessel(points, radius, distance))
        travelled = distance + _polyline_length(points)
        child_radius = radius * _CHILD_RADIUS_RATIO
        for _ in range(2):
            child = _deviate(end - start, rng) + 0.5 * _outward(end)
            grow(end, _unit(child), child_radius, length * rng.uniform(0.65, 0.9), travelled)
        if rng.random() < 0.5:
            # A side branch off the middle of the segment: cortical arteries branch all along.
            middle = points[len(points) // 2]
            side = _deviate(end - start, rng) + _outward(middle)
            grow(middle, _unit(side), child_radius * _CHILD_RADIUS_RATIO, length * 0.6, travelled - length / 2)

    for waypoints, radius, end_branches in _main_arteries(rng):
        pieces = [_meander(p, q, meander, rng) for p, q in itertools.pairwise(waypoints)]
        vessels.append(_Vessel(np.concatenate([piece[:-1] for piece in pieces] + [waypoints[-1:]]), radius, 0.0))
        if end_branches == 0:
            continue
        # Branches leave at every bend of the trunk and fan out from its end.
        distance = _TRUNK_START_MM
        origins = []
        for index, piece in enumerate(pieces, start=1):
            distance += _polyline_length(piece)
            origins += [(index, distance)] * (end_branches if index == len(pieces) else 1)
        for index, distance in origins:
            origin = waypoints[index]
            heading = _deviate(waypoints[index] - waypoints[index - 1], rng) + _outward(origin)
            grow(origin, _unit(heading), radius * _CHILD_RADIUS_RATIO, rng.uniform(14.0, 22.0), distance)
    return vessels


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def _outward(point: np.ndarray) -> np.ndarray:
    """Direction from the brain centre to ``point``, tilted upward: arteries climb the cortex."""
    return _unit(_unit(point - _BRAIN_ELLIPSOID_CENTRE) + np.array([0.0, 0.0, 0.2]))


def _deviate(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Turn a direction by 25-55 degrees about a random perpendicular axis."""
    forward = _unit(direction)
    side = _unit(np.cross(forward, rng.normal(size=3)))
    angle = math.radians(rng.uniform(25.0, 55.0))
    return math.cos(angle) * forward + math.sin(angle) * side


def _inside_brain(point: np.ndarray) -> np.ndarray:
    """Pull a point back inside the brain ellipsoid if it has left it."""
    relative = (point - _BRAIN_ELLIPSOID_CENTRE) / _BRAIN_ELLIPSOID_AXES
    extent = float(np.linalg.norm(relative))
    if extent <= 1.0:
        return point
    return _BRAIN_ELLIPSOID_CENTRE + relative / extent * _BRAIN_ELLIPSOID_AXES


def _meander(start: np.ndarray, end: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A polyline from start to end that wanders sideways by ``amplitude`` x its length."""
    chord = end - start
    length = float(np.linalg.norm(chord))
    n_pieces = max(2, math.ceil(length / 4.0))
    t = np.linspace(0.0, 1.0, n_pieces + 1)[:, None]
    side = _unit(np.cross(chord, rng.normal(size=3)))
    other = _unit(np.cross(chord, side))
    # Sine harmonics vanish at both ends, so segments still join their parents.
    harmonics = np.sin(np.pi * t * np.arange(1, 4)) / np.arange(1, 4)
    lateral = harmonics @ rng.normal(0.0, amplitude * length, (3, 2))
    return start + t * chord + lateral[:, :1] * side + lateral[:, 1:] * other


def _polyline_length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def _distal_decay_mm(bio_age: float) -> float:
    """Path length over which inflow signal falls by 1/e: shorter in older, slower flow."""
    return 320.0 - 190.0 * max(age_fraction(bio_age), 0.0)


def vessel_tree(
    shape: tuple[int, int, int], affine: np.ndarray, bio_age: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize a random arterial tree on a voxel grid: (vessel mask, vessel signal in [0, 1]).

    ``affine`` maps the grid's voxel indices to head (template) mm; for a scan that is
    ``inv(head_to_scanner) @ scan_affine``. The tree's branching, pruning, tortuosity and distal
    signal depend on ``bio_age``; its randomness on ``rng`` only. Vessels thinner than a voxel
    are drawn one voxel wide with proportionally less signal (partial volume), and the mask is
    the voxels where the signal is at least 0.15, i.e. where a vessel is visible.
    """
    shape = tuple(int(n) for n in shape)
    affine = np.asarray(affine, dtype=float)
    vessels = _arterial_tree(bio_age, rng)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    step = 0.4 * float(spacing.min())
    positions, radii, distances = _sample_centrelines(vessels, step)
    drawn_radius = np.maximum(radii, 0.5 * float(spacing.max()))
    strength = np.exp(-distances / _distal_decay_mm(bio_age)) * np.minimum(1.0, radii / drawn_radius)
    signal = _rasterize(positions, drawn_radius, strength, shape, affine)
    return signal >= _VISIBLE_SIGNAL, signal


def _sample_centrelines(vessels: list[_Vessel], step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every ``step`` mm along all vessels, with their radius and distance from the root."""
    positions, radii, distances = [], [], []
    for vessel in vessels:
        travelled = vessel.start_distance
        for p, q in zip(vessel.points[:-1], vessel.points[1:], strict=True):
            length = float(np.linalg.norm(q - p))
            t = np.arange(0.0, length, step) / max(length, 1e-9)
            positions.append(p + t[:, None] * (q - p))
            distances.append(travelled + t * length)
            radii.append(np.full(len(t), vessel.radius))
            travelled += length
    return np.concatenate(positions), np.concatenate(radii), np.concatenate(distances)


def _rasterize(
    positions: np.ndarray, radius: np.ndarray, strength: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray
) -> np.ndarray:
    """Paint balls of ``radius`` mm around centreline points; each voxel keeps its max strength."""
    to_voxel = np.linalg.inv(affine)
    continuous = positions @ to_voxel[:3, :3].T + to_voxel[:3, 3]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    reach = math.ceil(float(radius.max()) / float(spacing.min()))
    inside = np.all((continuous >= -reach) & (continuous <= np.asarray(shape) - 1 + reach), axis=1)
    continuous, radius, strength = continuous[inside], radius[inside], strength[inside]
    span = np.arange(-reach, reach + 1)
    offsets = np.stack(np.meshgrid(span, span, span, indexing="ij"), axis=-1).reshape(-1, 3)
    signal = np.zeros(int(np.prod(shape)), dtype=np.float32)
    chunk = max(1, 4_000_000 // len(offsets))
    for start in range(0, len(continuous), chunk):
        points = continuous[start : start + chunk]
        voxels = np.round(points).astype(np.intp)[:, None, :] + offsets[None, :, :]
        distance = np.linalg.norm((voxels - points[:, None, :]) @ affine[:3, :3].T, axis=-1)
        hit = (distance <= radius[start : start + chunk, None]) & np.all(
            (voxels >= 0) & (voxels < np.asarray(shape)), axis=-1
        )
        flat = np.ravel_multi_index(tuple(voxels[hit].T), shape)
        values = np.broadcast_to(strength[start : start + chunk, None], hit.shape)[hit]
        np.maximum.at(signal, flat, values.astype(np.float32))
    return signal.reshape(shape)
