"""Synthetic heads and axial MR slices: the anatomy behind every phantom image.

A :class:`HeadModel` describes one synthetic head in millimetres (shape, layers, ventricles,
tissue texture, coil bias, noise level); a :class:`TumorSpec` describes one irregular mass inside
its brain. :func:`render_slice` draws the axial slice of a head at a height ``z_mm`` on a square
field of view, optionally with the tumor, and returns float32 magnitude intensities.

Coordinates: ``x`` runs from the patient's right to left, ``y`` from anterior to posterior
(image rows go down towards the back of the head) and ``z`` from inferior to superior, all in mm
from the head's centre. Image column ``j`` and row ``i`` map to ``x`` and ``y`` of the scanner
through the head's offset and in-plane rotation.

Everything here is a pure function of its arguments and of the random generator passed in: the
same generator state gives the same array, and a slice rendered with and without a tumor (from
generators in the same state) differs only inside the tumor's window, because drawing the tumor
consumes no random numbers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

FloatImage = NDArray[np.float32]

#: MR weightings the phantom can draw; each maps tissues to relative intensities.
Sequence = Literal["T1", "T1C", "T2", "FLAIR"]
SEQUENCES: tuple[Sequence, ...] = ("T1", "T1C", "T2", "FLAIR")

_TEXTURE_COARSE_PX = 12
_TEXTURE_FINE_PX = 64
_BIAS_GRID_PX = 8
_EDGE_SOFTNESS_MM = 0.6
_ANGLE_STEPS = 2048
_SULCUS_DISTANCE_SCALE_MM = 4.5


@dataclass(frozen=True)
class TissueIntensities:
    """Relative magnitude of each tissue for one weighting (white matter of T1 is about 0.7)."""

    scalp: float
    skull_cortex: float
    marrow: float
    csf: float
    grey_matter: float
    white_matter: float
    deep_grey: float
    vessel: float

    @property
    def parenchyma(self) -> float:
        """Mean of grey and white matter: the reference a tumor's contrast is relative to."""
        return 0.5 * (self.grey_matter + self.white_matter)

    @property
    def brightest(self) -> float:
        """The brightest normal tissue, used to set a display white level."""
        return max(
            self.scalp, self.marrow, self.csf, self.grey_matter, self.white_matter, self.vessel
        )


#: Tissue intensities per weighting. T1: fat (marrow, scalp) bright, CSF dark, white matter
#: brighter than grey. T2: CSF bright, grey brighter than white. FLAIR: CSF suppressed.
#: T1C: T1 after contrast, with enhancing vessels.
TISSUES: dict[Sequence, TissueIntensities] = {
    "T1": TissueIntensities(0.55, 0.04, 0.85, 0.14, 0.48, 0.70, 0.55, 0.50),
    "T1C": TissueIntensities(0.55, 0.04, 0.85, 0.14, 0.50, 0.70, 0.56, 0.95),
    "T2": TissueIntensities(0.45, 0.04, 0.55, 0.95, 0.58, 0.42, 0.50, 0.08),
    "FLAIR": TissueIntensities(0.45, 0.04, 0.55, 0.10, 0.62, 0.48, 0.55, 0.20),
}


@dataclass(frozen=True, eq=False)
class HeadModel:
    """One synthetic head, in millimetres.

    The outer (scalp) surface is an ellipsoid with a few low-order in-plane harmonics; its axial
    cross-section at height ``z_mm`` shrinks towards the vertex. Layers inwards: scalp, skull
    (outer table, marrow, inner table), cerebrospinal fluid (CSF), cortex (grey matter, folded by
    sulci), white matter, with lateral ventricles and deep grey nuclei in the middle.
    """

    center_x_mm: float
    center_y_mm: float
    rotation_deg: float
    semi_axis_lr_mm: float
    semi_axis_ap_mm: float
    semi_axis_si_mm: float
    #: (amplitude, phase in radians) of in-plane harmonics k = 2, 3, 4 of the outline.
    outline_harmonics: tuple[tuple[float, float], ...]
    #: Radius (mm) of the central section's outline on ``_ANGLE_STEPS + 1`` polar angles over
    #: [0, 2 pi]: the ellipse of the two semi axes times the harmonics (derived, for speed).
    outline_mm: NDArray[np.float32]
    scalp_thickness_mm: float
    skull_table_thickness_mm: float
    marrow_thickness_mm: float
    csf_thickness_mm: float
    cortex_thickness_mm: float
    #: How deep (mm below the brain surface) sulci reach on average.
    sulcus_depth_mm: float
    ventricle_center_z_mm: float
    ventricle_half_height_mm: float
    ventricle_half_length_mm: float
    ventricle_half_width_mm: float
    ventricle_offset_mm: float
    ventricle_splay_rad: float
    ventricle_bend: float
    #: Texture fields, shape (4, n, n): two coarse and two fine fields, blended along z.
    texture_coarse: NDArray[np.float32]
    texture_fine: NDArray[np.float32]
    texture_amplitude: float
    #: Smooth multiplicative receive-coil bias, shape (n, n), mean about 1.
    bias_field: NDArray[np.float32]
    #: Standard deviation of the Gaussian noise in each of the real and imaginary channels,
    #: relative to the tissue scale (white matter of T1 is about 0.7).
    noise_sigma: float
    #: Global receive gain applied before noise.
    gain: float

    @property
    def z_min_mm(self) -> float:
        """Lowest axial level that still shows a sizeable brain section."""
        return -0.45 * self.semi_axis_si_mm

    @property
    def z_max_mm(self) -> float:
        """Highest axial level that still shows a sizeable brain section."""
        return 0.80 * self.semi_axis_si_mm

    @property
    def shell_thickness_mm(self) -> float:
        """Scalp, skull and CSF together: depth of the brain surface below the scalp surface."""
        return (
            self.scalp_thickness_mm
            + 2.0 * self.skull_table_thickness_mm
            + self.marrow_thickness_mm
            + self.csf_thickness_mm
        )

    def section_scale(self, z_mm: float) -> float:
        """In-plane scale of the axial cross-section at ``z_mm`` (1 at the centre, 0 outside)."""
        # The head continues into the skull base and neck below the centre: taper slowly there.
        semi_axis_mm = self.semi_axis_si_mm if z_mm >= 0 else 1.6 * self.semi_axis_si_mm
        ratio = z_mm / semi_axis_mm
        return math.sqrt(max(0.0, 1.0 - ratio * ratio))

    def brain_inner_radius_mm(self, z_mm: float) -> float:
        """A radius (mm, from the head centre) inside which the section is surely brain."""
        shortest = min(self.semi_axis_lr_mm, self.semi_axis_ap_mm)
        wobble = sum(abs(amplitude) for amplitude, _ in self.outline_harmonics)
        return max(
            0.0, shortest * self.section_scale(z_mm) * (1 - wobble) - self.shell_thickness_mm
        )

    def head_to_image_px(
        self, x_mm: float, y_mm: float, image_size_px: int, field_of_view_mm: float
    ) -> tuple[float, float]:
        """Image (column, row) in pixels of head point (``x_mm``, ``y_mm``), pixel centres at .5."""
        angle = math.radians(self.rotation_deg)
        cos_a, sin_a = math.cos(angle), math.sin(angle)
        scanner_x = self.center_x_mm + cos_a * x_mm - sin_a * y_mm
        scanner_y = self.center_y_mm + sin_a * x_mm + cos_a * y_mm
        pixel_mm = field_of_view_mm / image_size_px
        return scanner_x / pixel_mm + image_size_px / 2, scanner_y / pixel_mm + image_size_px / 2


@dataclass(frozen=True)
class TumorSpec:
    """One irregular mass inside a head's brain, in the head's coordinates (mm).

    The mass is a blob: an ellipsoid of in-plane radius ``radius_mm`` and superior-inferior semi
    axis ``radius_mm * height_ratio`` whose outline is perturbed by angular harmonics.
    ``contrast`` is the relative intensity change against the mean of grey and white matter
    (> 0 hyper-intense, < 0 hypo-intense). An optional necrotic core (fluid-like, a fraction of
    the radius) and an optional edema halo (a relative brightening of surrounding brain over a
    width that is a fraction of the radius) can be present.
    """

    center_x_mm: float
    center_y_mm: float
    center_z_mm: float
    radius_mm: float
    height_ratio: float
    #: (amplitude, phase in radians) of outline harmonics k = 2, 3, ...
    outline_harmonics: tuple[tuple[float, float], ...]
    contrast: float
    heterogeneity: float
    necrosis_fraction: float
    edema_width_fraction: float
    edema_contrast: float

    @property
    def half_height_mm(self) -> float:
        """Superior-inferior semi axis of the mass."""
        return self.radius_mm * self.height_ratio

    def section_radius_mm(self, z_mm: float) -> float:
        """Nominal radius of the mass's cross-section at ``z_mm`` (0 when the slice misses it)."""
        ratio = (z_mm - self.center_z_mm) / self.half_height_mm
        return self.radius_mm * math.sqrt(max(0.0, 1.0 - ratio * ratio))

    def intersects(self, z_mm: float) -> bool:
        """Whether an axial slice at ``z_mm`` cuts through the mass itself (edema aside)."""
        return self.section_radius_mm(z_mm) > 0.0

    @property
    def outline_factor(self) -> float:
        """Largest factor by which the outline harmonics can stretch the nominal radius."""
        return 1.0 + sum(abs(amplitude) for amplitude, _ in self.outline_harmonics)

    def extent_mm(self, z_mm: float) -> float:
        """Radius (mm) from the in-plane centre outside which the tumor changes nothing."""
        edema_height = self.half_height_mm * (1 + self.edema_width_fraction)
        ratio = (z_mm - self.center_z_mm) / edema_height
        if abs(ratio) >= 1.0:
            return 0.0
        reach = self.radius_mm * (1 + self.edema_width_fraction) * math.sqrt(1 - ratio * ratio)
        return reach * self.outline_factor + 4 * _EDGE_SOFTNESS_MM


def _smooth_field(rng: np.random.Generator, count: int, size_px: int) -> NDArray[np.float32]:
    """``count`` zero-mean unit-variance smooth random fields of ``size_px`` squared pixels."""
    raw = rng.standard_normal((count, size_px, size_px)).astype(np.float32)
    fields = np.empty_like(raw)
    for index in range(count):
        blurred = cv2.GaussianBlur(raw[index], (0, 0), sigmaX=1.0, borderType=cv2.BORDER_REFLECT)
        blurred -= blurred.mean()
        fields[index] = blurred / max(float(blurred.std()), 1e-6)
    return fields


def make_head(
    rng: np.random.Generator,
    *,
    noise_sigma_range: tuple[float, float] = (0.015, 0.05),
    bias_strength_range: tuple[float, float] = (0.05, 0.25),
) -> HeadModel:
    """Draw one synthetic head: size, shape, position, rotation, layers, texture, bias and noise.

    ``noise_sigma_range`` bounds the per-channel noise level relative to the tissue scale;
    ``bias_strength_range`` bounds the peak relative deviation of the smooth intensity bias.
    """
    lr = float(rng.uniform(64.0, 76.0))
    ap = float(lr * rng.uniform(1.12, 1.32))
    harmonics = tuple(
        (float(rng.uniform(0.0, 0.03)), float(rng.uniform(0, 2 * np.pi))) for _ in range(3)
    )
    bias_strength = float(rng.uniform(*bias_strength_range))
    # A linear-plus-quadratic bias in normalised image coordinates, sampled on a coarse grid and
    # upsampled at render time: receive-coil sensitivity varies slowly across the field of view.
    grid = np.linspace(-1.0, 1.0, _BIAS_GRID_PX, dtype=np.float32)
    grid_x, grid_y = np.meshgrid(grid, grid)
    coefficients = rng.standard_normal(5).astype(np.float32)
    polynomial = (
        coefficients[0] * grid_x
        + coefficients[1] * grid_y
        + coefficients[2] * grid_x * grid_x
        + coefficients[3] * grid_y * grid_y
        + coefficients[4] * grid_x * grid_y
    )
    polynomial /= max(float(np.abs(polynomial).max()), 1e-6)
    bias = (1.0 + bias_strength * polynomial).astype(np.float32)
    angles = np.linspace(0.0, 2 * np.pi, _ANGLE_STEPS + 1, dtype=np.float32)
    ellipse = (lr * ap) / np.sqrt((ap * np.cos(angles)) ** 2 + (lr * np.sin(angles)) ** 2)
    return HeadModel(
        center_x_mm=float(rng.uniform(-10.0, 10.0)),
        center_y_mm=float(rng.uniform(-10.0, 10.0)),
        rotation_deg=float(rng.uniform(-15.0, 15.0)),
        semi_axis_lr_mm=lr,
        semi_axis_ap_mm=ap,
        semi_axis_si_mm=float(rng.uniform(68.0, 82.0)),
        outline_harmonics=harmonics,
        outline_mm=(ellipse * _angular_table(harmonics)).astype(np.float32),
        scalp_thickness_mm=float(rng.uniform(3.0, 6.0)),
        skull_table_thickness_mm=float(rng.uniform(1.0, 2.0)),
        marrow_thickness_mm=float(rng.uniform(1.5, 4.0)),
        csf_thickness_mm=float(rng.uniform(1.0, 3.0)),
        cortex_thickness_mm=float(rng.uniform(2.2, 3.2)),
        sulcus_depth_mm=float(rng.uniform(8.0, 16.0)),
        ventricle_center_z_mm=float(rng.uniform(5.0, 15.0)),
        ventricle_half_height_mm=float(rng.uniform(16.0, 24.0)),
        ventricle_half_length_mm=float(rng.uniform(14.0, 24.0)),
        ventricle_half_width_mm=float(rng.uniform(2.5, 6.5)),
        ventricle_offset_mm=float(rng.uniform(4.0, 7.0)),
        ventricle_splay_rad=float(rng.uniform(0.10, 0.35)),
        ventricle_bend=float(rng.uniform(0.0, 0.8)),
        texture_coarse=_smooth_field(rng, 4, _TEXTURE_COARSE_PX),
        texture_fine=_smooth_field(rng, 4, _TEXTURE_FINE_PX),
        texture_amplitude=float(rng.uniform(0.03, 0.08)),
        bias_field=bias,
        noise_sigma=float(rng.uniform(*noise_sigma_range)),
        gain=float(rng.uniform(0.85, 1.15)),
    )


def make_tumor(
    rng: np.random.Generator,
    head: HeadModel,
    *,
    radius_range_mm: tuple[float, float] = (2.5, 26.0),
    contrast_magnitude_range: tuple[float, float] = (0.07, 0.6),
    hyperintense_probability: float = 0.6,
    necrosis_probability: float = 0.4,
    edema_probability: float = 0.6,
) -> TumorSpec:
    """Draw one tumor inside ``head``'s brain.

    The radius is log-uniform in ``radius_range_mm`` (so small masses are common), the contrast
    magnitude uniform in ``contrast_magnitude_range`` and hyper-intense with
    ``hyperintense_probability``. Masses over 7 mm may have a necrotic core; any may have edema.
    The mass is shrunk if needed so that it, its outline wobble and its edema stay in the brain.
    """
    low, high = radius_range_mm
    radius = float(math.exp(rng.uniform(math.log(low), math.log(high))))
    center_z = float(rng.uniform(head.z_min_mm + 10.0, head.z_max_mm - 8.0))
    harmonics = tuple(
        (float(rng.uniform(0.0, 0.16 / (k - 1))), float(rng.uniform(0, 2 * np.pi)))
        for k in range(2, 7)
    )
    has_edema = bool(rng.random() < edema_probability)
    edema_width = float(rng.uniform(0.3, 1.0)) if has_edema else 0.0
    outline_factor = 1.0 + sum(amplitude for amplitude, _ in harmonics)
    room = head.brain_inner_radius_mm(center_z) - 2.0
    radius = min(radius, max(1.5, room / (outline_factor * (1 + edema_width) + 0.3)))
    reach = radius * outline_factor * (1 + edema_width)
    angle = float(rng.uniform(0, 2 * np.pi))
    distance = float(math.sqrt(rng.random()) * max(0.0, room - reach))
    necrosis = (
        float(rng.uniform(0.3, 0.65))
        if radius > 7.0 and rng.random() < necrosis_probability
        else 0.0
    )
    sign = 1.0 if rng.random() < hyperintense_probability else -1.0
    return TumorSpec(
        center_x_mm=distance * math.cos(angle),
        center_y_mm=distance * math.sin(angle),
        center_z_mm=center_z,
        radius_mm=radius,
        height_ratio=float(rng.uniform(0.7, 1.3)),
        outline_harmonics=harmonics,
        contrast=sign * float(rng.uniform(*contrast_magnitude_range)),
        heterogeneity=float(rng.uniform(0.0, 0.12)),
        necrosis_fraction=necrosis,
        edema_width_fraction=edema_width,
        edema_contrast=float(rng.uniform(0.06, 0.22)) if has_edema else 0.0,
    )


def _ramp(signed_distance_mm: NDArray[np.float32], width_mm: float) -> NDArray[np.float32]:
    """Partial-volume step: 0 well outside (negative), 1 well inside, linear over ``width_mm``."""
    out = signed_distance_mm * np.float32(1.0 / width_mm)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def _window(
    center_col: float, center_row: float, radius_px: float, size_px: int
) -> tuple[slice, slice] | None:
    """Row and column slices of the square window of ``radius_px`` around a point, or None."""
    row0 = max(0, math.floor(center_row - radius_px))
    row1 = min(size_px, math.ceil(center_row + radius_px) + 1)
    col0 = max(0, math.floor(center_col - radius_px))
    col1 = min(size_px, math.ceil(center_col + radius_px) + 1)
    if row0 >= row1 or col0 >= col1:
        return None
    return slice(row0, row1), slice(col0, col1)


def _blend_texture(
    fields: NDArray[np.float32], z_mm: float, period_mm: float
) -> NDArray[np.float32]:
    """Blend four 2-D unit-variance fields into one that drifts smoothly with ``z_mm``."""
    phase = 2 * math.pi * z_mm / period_mm
    weights = np.array(
        [
            math.cos(phase),
            math.sin(phase),
            math.cos(0.61 * phase + 1.0),
            math.sin(0.61 * phase + 1.0),
        ],
        dtype=np.float32,
    ) * np.float32(1 / math.sqrt(2.0))
    return np.tensordot(weights, fields, axes=1).astype(np.float32, copy=False)


def _upsample(
    field: NDArray[np.float32], size_px: int, *, smooth: bool = False
) -> NDArray[np.float32]:
    """Resize a coarse field onto the ``size_px`` squared image grid (cubic when ``smooth``)."""
    interpolation = cv2.INTER_CUBIC if smooth else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(field, (size_px, size_px), interpolation=interpolation))


@functools.cache
def _noise_tables() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Lookup tables for Box-Muller noise: Rayleigh radius per 16-bit uniform, cosine per byte."""
    uniform = (np.arange(65536, dtype=np.float64) + 0.5) / 65536
    rayleigh = np.sqrt(-2.0 * np.log(uniform)).astype(np.float32)
    cosine = np.cos(2 * np.pi * (np.arange(256, dtype=np.float64) + 0.5) / 256).astype(np.float32)
    return rayleigh, cosine


def add_rician_noise(
    image: NDArray[np.float32], sigma: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Magnitude of ``image`` plus complex Gaussian noise of per-channel std ``sigma``.

    MR magnitude images are Rician: ``|S + sigma * (n1 + i n2)|``. Writing the complex noise in
    polar form (Box-Muller: Rayleigh radius ``R``, uniform phase ``phi``) gives
    ``sqrt(S^2 + (sigma R)^2 + 2 S sigma R cos(phi))`` from two random numbers per pixel, drawn
    as raw bytes through lookup tables, which is several times faster than two normal draws.
    """
    rayleigh_table, cosine_table = _noise_tables()
    count = image.size
    raw = np.frombuffer(rng.bytes(3 * count), dtype=np.uint8)
    radius_index = raw[: 2 * count].view(np.uint16)
    noise_radius = rayleigh_table[radius_index].reshape(image.shape)
    noise_radius *= np.float32(sigma)
    cosine = cosine_table[raw[2 * count :]].reshape(image.shape)
    result = image * image
    cosine *= noise_radius
    cosine *= image
    cosine *= np.float32(2.0)
    result += cosine
    noise_radius *= noise_radius
    result += noise_radius
    np.maximum(result, 0.0, out=result)
    return np.sqrt(result, out=result)


def _shell_table(
    head: HeadModel, tissue: TissueIntensities, edge_mm: float
) -> tuple[float, float, NDArray[np.float32]]:
    """Depth lookup table of the shell's intensity (scalp, skull tables and marrow, CSF).

    Returns the depth (mm) of the first entry, the entries per mm and the intensities, with
    partial-volume edges, fading to 0 where the brain begins. Depths beyond either end take the
    end's value (0: outside the head, or inside the brain).
    """
    steps_per_mm = 20.0
    start_mm = -2.0 * edge_mm
    stop_mm = head.shell_thickness_mm + 2.0 * edge_mm
    count = int((stop_mm - start_mm) * steps_per_mm) + 1
    depth = (np.arange(count, dtype=np.float32) * np.float32(1 / steps_per_mm)) + np.float32(
        start_mm
    )
    layers = (
        (0.0, tissue.scalp),
        (head.scalp_thickness_mm, tissue.skull_cortex),
        (head.skull_table_thickness_mm, tissue.marrow),
        (head.marrow_thickness_mm, tissue.skull_cortex),
        (head.skull_table_thickness_mm, tissue.csf),
    )
    shell = np.zeros_like(depth)
    boundary_mm = 0.0
    previous = 0.0
    for thickness_mm, intensity in layers:
        boundary_mm += thickness_mm
        shell += (intensity - previous) * _ramp(depth - np.float32(boundary_mm), edge_mm)
        previous = intensity
    shell *= 1.0 - _ramp(depth - np.float32(head.shell_thickness_mm), edge_mm)
    return start_mm, steps_per_mm, shell


def _head_frame(
    head: HeadModel, rows: slice, cols: slice, size: int, field_of_view_mm: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Head coordinates (mm) of the pixel centres of an image window: (x, y) arrays."""
    pixel_mm = field_of_view_mm / size
    center_col, center_row = head.head_to_image_px(0.0, 0.0, size, field_of_view_mm)
    angle = math.radians(head.rotation_deg)
    cos_a, sin_a = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    d_col = np.arange(cols.start, cols.stop, dtype=np.float32) + np.float32(0.5 - center_col)
    d_col *= np.float32(pixel_mm)
    d_row = np.arange(rows.start, rows.stop, dtype=np.float32) + np.float32(0.5 - center_row)
    d_row *= np.float32(pixel_mm)
    head_x = cos_a * d_col[None, :] + sin_a * d_row[:, None]
    head_y = cos_a * d_row[:, None] - sin_a * d_col[None, :]
    return head_x, head_y


def _angular_table(harmonics: tuple[tuple[float, float], ...]) -> NDArray[np.float32]:
    """``1 + sum_k a_k cos(k t - phase_k)`` (k = 2, 3, ...) on ``_ANGLE_STEPS + 1`` angles."""
    theta = np.linspace(0.0, 2 * np.pi, _ANGLE_STEPS + 1, dtype=np.float32)
    wobble = np.ones_like(theta)
    for order, (amplitude, phase) in enumerate(harmonics, start=2):
        wobble += np.float32(amplitude) * np.cos(np.float32(order) * theta - np.float32(phase))
    return wobble


def _polar(
    x: NDArray[np.float32], y: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Radius and polar angle in [0, 2 pi] of points (x, y), by OpenCV (faster than numpy)."""
    radius, theta = cv2.cartToPolar(x, y)
    return np.asarray(radius, dtype=np.float32), np.asarray(theta, dtype=np.float32)


def _polar_lookup(table: NDArray[np.float32], theta: NDArray[np.float32]) -> NDArray[np.float32]:
    """Look up an angular table at angles ``theta`` in [0, 2 pi] (radians)."""
    index = theta * np.float32(_ANGLE_STEPS / (2 * np.pi))
    return np.take(table, index.astype(np.int32))


def render_slice(
    head: HeadModel,
    z_mm: float,
    tumor: TumorSpec | None,
    image_size_px: int,
    rng: np.random.Generator,
    *,
    sequence: Sequence = "T1",
    field_of_view_mm: float = 240.0,
) -> FloatImage:
    """Draw the axial slice of ``head`` at height ``z_mm`` as a float32 magnitude image.

    The image is ``image_size_px`` squared over ``field_of_view_mm``; intensities are relative
    (white matter of T1 about 0.7 times the head's gain) and never negative. ``tumor`` (or None)
    is drawn where the slice cuts it or its edema. ``rng`` supplies the per-slice randomness
    (vessel dots and Rician noise); the tumor consumes none of it, so rendering the same head and
    slice with and without the tumor from generators in the same state gives images that differ
    only in the tumor's window (see :meth:`TumorSpec.extent_mm`).
    """
    if image_size_px < 16:
        raise ValueError(f"image_size_px must be at least 16, got {image_size_px}")
    if sequence not in TISSUES:
        raise ValueError(f"unknown sequence {sequence!r}; expected one of {', '.join(SEQUENCES)}")
    tissue = TISSUES[sequence]
    size = image_size_px
    pixel_mm = field_of_view_mm / size
    edge_mm = max(pixel_mm, _EDGE_SOFTNESS_MM)
    image = np.zeros((size, size), dtype=np.float32)

    section = head.section_scale(z_mm)
    wobble_max = sum(abs(amplitude) for amplitude, _ in head.outline_harmonics)
    reach_mm = max(head.semi_axis_lr_mm, head.semi_axis_ap_mm) * section * (1 + wobble_max)
    center_col, center_row = head.head_to_image_px(0.0, 0.0, size, field_of_view_mm)
    box = _window(center_col, center_row, reach_mm / pixel_mm + 2, size) if section > 0.05 else None
    if box is None:
        # Nothing of the head at this level; draw the same random numbers all the same.
        _draw_vessels(image, head, z_mm, rng, size, field_of_view_mm, tissue, None)
    else:
        rows, cols = box
        texture_coarse = _upsample(_blend_texture(head.texture_coarse, z_mm, 90.0), size)
        texture_fine = _upsample(_blend_texture(head.texture_fine, z_mm, 30.0), size, smooth=True)
        brain = np.zeros_like(image)
        parenchyma = np.zeros_like(image)
        shell, brain[rows, cols], parenchyma[rows, cols] = _draw_head(
            head,
            z_mm,
            rows,
            cols,
            size,
            field_of_view_mm,
            section,
            tissue,
            edge_mm,
            texture_coarse[rows, cols],
            texture_fine[rows, cols],
        )
        _draw_ventricles(parenchyma, head, z_mm, size, field_of_view_mm, tissue, edge_mm)
        image[rows, cols] = shell + parenchyma[rows, cols] * brain[rows, cols]
        _draw_vessels(image, head, z_mm, rng, size, field_of_view_mm, tissue, brain)
        if tumor is not None:
            _draw_tumor(
                image,
                head,
                tumor,
                z_mm,
                size,
                field_of_view_mm,
                tissue,
                brain,
                texture_fine,
                edge_mm,
            )

    image *= _upsample(head.bias_field, size)
    image *= np.float32(head.gain)
    return add_rician_noise(image, head.noise_sigma * head.gain, rng)


def _draw_head(
    head: HeadModel,
    z_mm: float,
    rows: slice,
    cols: slice,
    size: int,
    field_of_view_mm: float,
    section: float,
    tissue: TissueIntensities,
    edge_mm: float,
    texture_coarse: NDArray[np.float32],
    texture_fine: NDArray[np.float32],
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Shell intensities, brain weight and parenchyma intensities of the head's window."""
    head_x, head_y = _head_frame(head, rows, cols, size, field_of_view_mm)
    radius, theta = _polar(head_x, head_y)

    outline = _polar_lookup(head.outline_mm, theta)
    outline *= np.float32(section)
    depth = outline - radius  # mm below the scalp surface; negative outside the head

    # Scalp, skull and CSF through depth lookup tables (partial-volume edges included).
    start_mm, steps_per_mm, shell_table = _shell_table(head, tissue, edge_mm)
    index = depth - np.float32(start_mm)
    index *= np.float32(steps_per_mm)
    np.clip(index, 0, len(shell_table) - 1, out=index)
    table_index = index.astype(np.int32)
    shell = np.take(shell_table, table_index)
    brain_depth = depth - np.float32(head.shell_thickness_mm)
    brain = _ramp(brain_depth, edge_mm)

    # Cortex: grey matter within a few mm of CSF, where CSF also fills sulci. Sulci follow the
    # zero lines of a smooth random field (a labyrinth, like real gyri) down to a varying depth;
    # the distance to the nearest sulcus is approximated by the field's magnitude.
    sulcus_distance = np.abs(texture_fine)
    sulcus_distance *= np.float32(_SULCUS_DISTANCE_SCALE_MM)
    below_floor = texture_coarse * np.float32(-0.4 * head.sulcus_depth_mm)
    below_floor += brain_depth
    below_floor -= np.float32(head.sulcus_depth_mm)
    np.maximum(below_floor, 0.0, out=below_floor)
    below_floor *= np.float32(4.0)
    sulcus_distance += below_floor
    csf_distance = np.minimum(brain_depth, sulcus_distance)
    grey = _ramp(np.float32(head.cortex_thickness_mm) - csf_distance, edge_mm)
    sulcal_csf = _ramp(np.float32(0.45) - sulcus_distance, edge_mm)
    parenchyma = grey * np.float32(tissue.grey_matter - tissue.white_matter)
    parenchyma += np.float32(tissue.white_matter)
    modulation = texture_coarse * np.float32(0.7 * head.texture_amplitude)
    modulation += texture_fine * np.float32(0.3 * head.texture_amplitude)
    modulation += np.float32(1.0)
    parenchyma *= modulation
    parenchyma += (np.float32(tissue.csf) - parenchyma) * sulcal_csf

    # In front of and behind the ventricles (and above them) a CSF fissure splits the hemispheres.
    ventricle_profile = _ventricle_profile(head, z_mm)
    gap_mm = head.ventricle_half_length_mm * 1.3 * ventricle_profile
    fissure = _ramp(np.float32(0.8) - np.abs(head_x), edge_mm)
    fissure *= _ramp(np.abs(head_y) - np.float32(gap_mm), edge_mm)
    parenchyma += (np.float32(tissue.csf) - parenchyma) * fissure
    return shell, brain, parenchyma


def _ventricle_profile(head: HeadModel, z_mm: float) -> float:
    """Relative size (0..1) of the lateral ventricles' section at ``z_mm``."""
    ratio = (z_mm - head.ventricle_center_z_mm) / head.ventricle_half_height_mm
    return math.sqrt(max(0.0, 1.0 - ratio * ratio))


def _draw_ventricles(
    parenchyma: NDArray[np.float32],
    head: HeadModel,
    z_mm: float,
    size: int,
    field_of_view_mm: float,
    tissue: TissueIntensities,
    edge_mm: float,
) -> None:
    """Add lateral ventricles (CSF) and deep grey nuclei to full-image ``parenchyma`` in place."""
    profile = _ventricle_profile(head, z_mm)
    if profile <= 0.0:
        return
    pixel_mm = field_of_view_mm / size
    csf = np.float32(tissue.csf)
    # Deep grey nuclei (thalamus, basal ganglia) lateral to the lower half of the ventricles.
    if z_mm < head.ventricle_center_z_mm:
        nuclei_size = np.float32(profile * profile)
        for side in (-1.0, 1.0):
            center_x = side * (head.ventricle_offset_mm + 9.0)
            col, row = head.head_to_image_px(center_x, 4.0, size, field_of_view_mm)
            box = _window(col, row, 14.0 / pixel_mm + 2, size)
            if box is None:
                continue
            x, y = _head_frame(head, *box, size, field_of_view_mm)
            u = (x - np.float32(center_x)) * np.float32(1 / 9.0)
            v = (y - np.float32(4.0)) * np.float32(1 / 13.0)
            nucleus = _ramp((nuclei_size - u * u - v * v) * np.float32(8.0), 1.0)
            patch = parenchyma[box]
            patch += (np.float32(tissue.deep_grey) - patch) * nucleus
    half_width = max(head.ventricle_half_width_mm * profile, 0.3)
    half_length = head.ventricle_half_length_mm * math.sqrt(profile)
    for side in (-1.0, 1.0):
        center_x = side * head.ventricle_offset_mm
        col, row = head.head_to_image_px(center_x, 0.0, size, field_of_view_mm)
        reach_mm = half_length + half_width * (1 + head.ventricle_bend) + 2 * edge_mm
        box = _window(col, row, reach_mm / pixel_mm + 1, size)
        if box is None:
            continue
        x, y = _head_frame(head, *box, size, field_of_view_mm)
        splay = side * head.ventricle_splay_rad
        dx = x - np.float32(center_x)
        u = np.float32(math.cos(splay)) * dx + np.float32(math.sin(splay)) * y
        v = np.float32(math.cos(splay)) * y - np.float32(math.sin(splay)) * dx
        v *= np.float32(1 / half_length)
        # Bend the horns outwards: a banana rather than an ellipse.
        u -= np.float32(side * head.ventricle_bend * half_width) * v * v
        u *= np.float32(1 / half_width)
        level = np.sqrt(u * u + v * v)
        ventricle = _ramp((np.float32(1.0) - level) * np.float32(half_width), edge_mm)
        patch = parenchyma[box]
        patch += (csf - patch) * ventricle


def _draw_vessels(
    image: NDArray[np.float32],
    head: HeadModel,
    z_mm: float,
    rng: np.random.Generator,
    size: int,
    field_of_view_mm: float,
    tissue: TissueIntensities,
    brain: NDArray[np.float32] | None,
) -> None:
    """Add up to four vessel dots (bright, or dark flow voids in T2): normal look-alikes.

    Draws the same random numbers whether or not anything is drawn (``brain`` None), so later
    draws from ``rng`` do not depend on the slice's content.
    """
    pixel_mm = field_of_view_mm / size
    dots = rng.random((4, 4))
    dot_count = int(dots[0, 3] * 5)
    inner_mm = max(head.brain_inner_radius_mm(z_mm) - 4.0, 0.0)
    if brain is None or inner_mm <= 0.0:
        return
    for dot_angle, dot_position, dot_size, _ in dots[:dot_count]:
        distance_mm = math.sqrt(dot_position) * inner_mm
        theta = 2 * math.pi * dot_angle
        dot_radius_mm = 0.6 + 1.0 * dot_size
        col, row = head.head_to_image_px(
            distance_mm * math.cos(theta), distance_mm * math.sin(theta), size, field_of_view_mm
        )
        box = _window(col, row, dot_radius_mm / pixel_mm + 2, size)
        if box is None:
            continue
        rows, cols = box
        distance = np.hypot(
            (np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5 - row)[:, None],
            (np.arange(cols.start, cols.stop, dtype=np.float32) + 0.5 - col)[None, :],
        ) * np.float32(pixel_mm)
        weight = _ramp(np.float32(dot_radius_mm) - distance, pixel_mm) * brain[rows, cols]
        image[rows, cols] += (np.float32(tissue.vessel) - image[rows, cols]) * weight * 0.8


@dataclass(frozen=True, eq=False)
class _TumorGeometry:
    """A tumor's window in one slice: in-plane distance (mm) from its centre and outline factor."""

    box: tuple[slice, slice]
    distance_mm: NDArray[np.float32]
    wobble: NDArray[np.float32]


def _tumor_geometry(
    head: HeadModel,
    tumor: TumorSpec,
    z_mm: float,
    size: int,
    field_of_view_mm: float,
    texture_fine: NDArray[np.float32],
) -> _TumorGeometry | None:
    """Geometry of ``tumor`` in the slice at ``z_mm``, or None when it changes nothing there."""
    extent_mm = tumor.extent_mm(z_mm)
    if extent_mm <= 0.0:
        return None
    pixel_mm = field_of_view_mm / size
    col, row = head.head_to_image_px(tumor.center_x_mm, tumor.center_y_mm, size, field_of_view_mm)
    box = _window(col, row, extent_mm / pixel_mm, size)
    if box is None:
        return None
    x, y = _head_frame(head, *box, size, field_of_view_mm)
    distance, theta = _polar(x - np.float32(tumor.center_x_mm), y - np.float32(tumor.center_y_mm))
    wobble = _polar_lookup(_angular_table(tumor.outline_harmonics), theta)
    # A little of the tissue texture roughens the outline beyond the smooth harmonics.
    wobble += np.float32(0.05) * texture_fine[box]
    return _TumorGeometry(box=box, distance_mm=distance, wobble=wobble)


def tumor_mask(
    head: HeadModel,
    tumor: TumorSpec,
    z_mm: float,
    image_size_px: int,
    *,
    field_of_view_mm: float = 240.0,
) -> NDArray[np.bool_]:
    """Pixels of the slice at ``z_mm`` that are at least half tumor mass (edema excluded).

    Matches what :func:`render_slice` draws for the same arguments; used for segmentations.
    """
    size = image_size_px
    mask = np.zeros((size, size), dtype=bool)
    section_mm = tumor.section_radius_mm(z_mm)
    if section_mm <= 0.0:
        return mask
    pixel_mm = field_of_view_mm / size
    edge_mm = max(pixel_mm, _EDGE_SOFTNESS_MM)
    texture_fine = _upsample(_blend_texture(head.texture_fine, z_mm, 30.0), size, smooth=True)
    geometry = _tumor_geometry(head, tumor, z_mm, size, field_of_view_mm, texture_fine)
    if geometry is None:
        return mask
    texture_coarse = _upsample(_blend_texture(head.texture_coarse, z_mm, 90.0), size)
    _, brain, _ = _draw_head(
        head,
        z_mm,
        *geometry.box,
        size,
        field_of_view_mm,
        head.section_scale(z_mm),
        TISSUES["T1"],
        edge_mm,
        texture_coarse[geometry.box],
        texture_fine[geometry.box],
    )
    mass = _ramp(np.float32(section_mm) * geometry.wobble - geometry.distance_mm, edge_mm)
    mask[geometry.box] = (mass * brain) >= 0.5
    return mask


def _draw_tumor(
    image: NDArray[np.float32],
    head: HeadModel,
    tumor: TumorSpec,
    z_mm: float,
    size: int,
    field_of_view_mm: float,
    tissue: TissueIntensities,
    brain: NDArray[np.float32],
    texture_fine: NDArray[np.float32],
    edge_mm: float,
) -> None:
    """Draw ``tumor`` (edema, mass, necrotic core) into ``image`` in place, inside its window."""
    geometry = _tumor_geometry(head, tumor, z_mm, size, field_of_view_mm, texture_fine)
    if geometry is None:
        return
    distance, wobble = geometry.distance_mm, geometry.wobble
    in_brain = brain[geometry.box]
    patch = image[geometry.box]

    # Edema: a moderate change (brightening in T2 and FLAIR) of surrounding brain, fading out.
    if tumor.edema_width_fraction > 0:
        edema_height = tumor.half_height_mm * (1 + tumor.edema_width_fraction)
        edema_ratio = (z_mm - tumor.center_z_mm) / edema_height
        edema_radius = (
            tumor.radius_mm
            * (1 + tumor.edema_width_fraction)
            * math.sqrt(max(0.0, 1 - edema_ratio * edema_ratio))
        )
        if edema_radius > 0:
            fade_width = max(tumor.radius_mm * tumor.edema_width_fraction, 1.0)
            fade = (np.float32(edema_radius) * wobble - distance) * np.float32(1 / fade_width)
            np.clip(fade, 0.0, 1.0, out=fade)
            patch *= 1.0 + np.float32(tumor.edema_contrast) * np.sqrt(fade) * in_brain

    section_mm = tumor.section_radius_mm(z_mm)
    if section_mm <= 0.0:
        return
    outline = np.float32(section_mm) * wobble
    mass = _ramp(outline - distance, edge_mm) * in_brain
    mass_intensity = np.float32(tissue.parenchyma * (1 + tumor.contrast)) * (
        1.0 + np.float32(tumor.heterogeneity) * texture_fine[geometry.box]
    )
    if tumor.necrosis_fraction > 0:
        core = _ramp(np.float32(tumor.necrosis_fraction) * outline - distance, edge_mm)
        necrosis_level = np.float32(0.9 * tissue.csf + 0.1 * tissue.parenchyma)
        mass_intensity += (necrosis_level - mass_intensity) * core
    patch += (mass_intensity - patch) * mass
