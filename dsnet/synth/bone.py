"""The vertebra on an axial slice: body (cortex + trabecular bone) and posterior elements.

Geometry is in the anatomy frame (`dsnet.synth.shapes`): origin at the centre of the
vertebral body, +u patient left, +v posterior, millimetres.

Bone status reaches the image through three separate cues (`dsnet.synth.population`):

- trabecular mean HU: the mean of the trabecular field is set exactly to the vertebra's
  trabecular HU (before the scan's calibration offset);
- microarchitecture (texture cue): a network of struts made from the zero set of
  band-pass noise. Lower density gives a longer strut spacing (1.9 mm -> 4.5 mm), a lower
  strut fraction, fattier (darker) marrow and 2-6 mm lacunae without struts, so the
  texture stays visible at 1-1.5 mm pixels;
- cortex (cortex cue): shell thickness (about 0.6-1.8 mm) and HU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

from dsnet.synth.population import VertebraTruth
from dsnet.synth.shapes import Canvas, Capsule, Ellipse, Fill, Shape

# Adult lumbar vertebral body half-width / half-depth (mm) at mid-height, L1 -> L4.
BODY_HALF_WIDTH = {"L1": 21.0, "L2": 22.3, "L3": 23.6, "L4": 24.8}
BODY_HALF_DEPTH = {"L1": 15.0, "L2": 15.8, "L3": 16.4, "L4": 16.8}
TRANSVERSE_LENGTH = {"L1": 15.0, "L2": 21.0, "L3": 27.0, "L4": 23.0}
SPINOUS_LENGTH = {"L1": 27.0, "L2": 28.0, "L3": 28.0, "L4": 25.0}
CANAL_HALF_WIDTH = {"L1": 10.5, "L2": 11.0, "L3": 11.5, "L4": 12.0}
CANAL_BODY_RATIO = 0.6  # a narrow (resized, `phantom.resize_bodies`) body: narrower canal
WAIST_PER_MM2 = 0.004  # relative body widening per mm^2 of distance from mid-height


@dataclass(frozen=True)
class Vertebra:
    """Shape and bone quality of one vertebra of one patient.

    Attributes:
        level: ``L1`` .. ``L4``.
        half_width: Half the transverse width of the body at mid-height (mm).
        half_depth: Half the antero-posterior depth of the body (mm).
        power: Super-ellipse exponent of the body outline (2 round .. 2.6 boxy).
        notch: Depth of the posterior concavity of the body (mm) - the kidney shape.
        rotation_deg: Axial rotation of the vertebra relative to the trunk.
        cortex_mm: Cortical shell thickness (mm).
        cortex_hu: HU of the cortical shell.
        trabecular_hu: Mean HU of the trabecular bone (before calibration offset).
        texture_cue: Density seen by the microarchitecture (T scale).
        posterior_hu: HU of the cancellous bone of the posterior elements.

    """

    level: str
    half_width: float
    half_depth: float
    power: float
    notch: float
    rotation_deg: float
    cortex_mm: float
    cortex_hu: float
    trabecular_hu: float
    texture_cue: float
    posterior_hu: float

    def point(self, u: float, v: float) -> tuple[float, float]:
        """A point given in the vertebra's own axes, in anatomy coordinates (mm)."""
        cos, sin = (
            math.cos(math.radians(self.rotation_deg)),
            math.sin(math.radians(self.rotation_deg)),
        )
        return cos * u - sin * v, sin * u + cos * v


def sample_vertebra(rng: np.random.Generator, truth: VertebraTruth, size_scale: float) -> Vertebra:
    """Draw the shape of one vertebra and turn its density cues into image parameters.

    Args:
        rng: Random generator of this patient and level.
        truth: The vertebra's truth (cues from `dsnet.synth.population`).
        size_scale: The patient's skeletal size factor (about 0.9-1.15).

    Returns:
        The vertebra to render.

    """
    level = truth.vertebra
    jitter = rng.normal(1.0, 0.025, size=2)
    cortex = truth.cortex_cue
    return Vertebra(
        level=level,
        half_width=BODY_HALF_WIDTH[level] * size_scale * jitter[0],
        half_depth=BODY_HALF_DEPTH[level] * size_scale * jitter[1],
        power=float(rng.uniform(2.1, 2.6)),
        notch=float(rng.uniform(0.10, 0.18)) * BODY_HALF_DEPTH[level] * size_scale,
        rotation_deg=float(rng.normal(0.0, 2.0)),
        cortex_mm=float(np.clip(1.4 + 0.15 * cortex, 0.8, 1.9)),
        cortex_hu=float(np.clip(1000.0 + 60.0 * cortex, 700.0, 1150.0)),
        trabecular_hu=truth.trabecular_hu,
        texture_cue=truth.texture_cue,
        posterior_hu=float(np.clip(260.0 + 25.0 * truth.density, 120.0, 360.0)),
    )


@dataclass(frozen=True)
class VertebralBody(Shape):
    """The body outline at one height: a super-ellipse with a posterior concavity."""

    vertebra: Vertebra
    z_offset_mm: float

    def _parts(self) -> tuple[Ellipse, Ellipse]:
        vb = self.vertebra
        widen = 1.0 + WAIST_PER_MM2 * self.z_offset_mm**2
        a, b = vb.half_width * widen, vb.half_depth * widen
        outline = Ellipse(0.0, 0.0, a, b, vb.rotation_deg, vb.power)
        notch_b = 0.5 * b
        centre = vb.point(0.0, b - vb.notch + notch_b)
        notch = Ellipse(*centre, 0.42 * a, notch_b, vb.rotation_deg)
        return outline, notch

    def bound(self) -> tuple[float, float, float]:  # noqa: D102
        return self._parts()[0].bound()

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:  # noqa: D102
        outline, notch = self._parts()
        return outline.contains(u, v) & ~notch.contains(u, v)


def posterior_layers(vb: Vertebra, tissue_csf: float, tissue_fat: float) -> list[Fill]:
    """Pedicles, laminae, spinous and transverse processes and the spinal canal.

    Each bony element is a cortical capsule filled with cancellous bone; the canal (with
    epidural fat and the CSF-filled thecal sac) is painted last so it stays open.
    """
    b = vb.half_depth
    a = vb.half_width
    level = vb.level
    ped_u, ped_v0, ped_v1 = 0.62 * a, 0.55 * b, b + 9.0
    canal_v = b + 9.0
    canal_a, canal_b = min(CANAL_HALF_WIDTH[level], CANAL_BODY_RATIO * a), 7.5
    lamina_end = (0.0, canal_v + canal_b + 3.0)
    sp_end = (0.0, lamina_end[1] + SPINOUS_LENGTH[level])
    tp_len = TRANSVERSE_LENGTH[level]
    bones: list[tuple[tuple[float, float], tuple[float, float], float, float]] = []
    for side in (-1.0, 1.0):
        bones.append(((side * ped_u, ped_v0), (side * ped_u, ped_v1), 4.8, 4.3))
        bones.append(((side * ped_u, ped_v1), lamina_end, 3.6, 3.2))
        bones.append(
            ((side * ped_u, ped_v1 - 2.0), (side * (ped_u + tp_len), ped_v1 - 4.0), 4.0, 2.8)
        )
    bones.append((lamina_end, sp_end, 3.2, 4.2))
    layers: list[Fill] = []
    for inner in (False, True):
        for start, end, r0, r1 in bones:
            shrink = 1.1 if inner else 0.0
            shape = Capsule(*vb.point(*start), *vb.point(*end), r0 - shrink, r1 - shrink)
            layers.append(Fill(shape, vb.posterior_hu if inner else vb.cortex_hu * 0.9))
    canal_centre = vb.point(0.0, canal_v)
    layers.append(Fill(Ellipse(*canal_centre, canal_a, canal_b, vb.rotation_deg, 2.2), tissue_fat))
    sac_centre = vb.point(0.0, canal_v - 0.5)
    layers.append(
        Fill(Ellipse(*sac_centre, canal_a - 2.5, canal_b - 1.8, vb.rotation_deg), tissue_csf)
    )
    return layers


def trabecular_field(
    rng: np.random.Generator, shape: tuple[int, int], spacing: float, texture_cue: float
) -> np.ndarray:
    """Trabecular microarchitecture as a strut occupancy map in [0, 1].

    Struts are the zero set of band-pass filtered white noise (a connected network whose
    cell size is the strut spacing); lacunae are regions of a coarser noise field where
    the struts are removed.

    Args:
        rng: Random generator of this slice.
        shape: (rows, cols) of the window to fill.
        spacing: Pixel spacing (mm).
        texture_cue: Density seen by the microarchitecture (T scale; lower is sparser).

    Returns:
        float32 [rows, cols] occupancy (mean about the strut fraction).

    """
    strut_spacing_mm = float(np.clip(2.1 - 0.5 * texture_cue, 1.9, 4.5))
    strut_fraction = float(np.clip(0.42 + 0.05 * texture_cue, 0.16, 0.5))
    lacuna_fraction = float(np.clip(-0.05 * (texture_cue + 0.5), 0.0, 0.25))
    sigma = 0.2 * strut_spacing_mm / spacing
    noise = rng.standard_normal(shape, dtype=np.float32)
    band = ndimage.gaussian_filter(noise, sigma) - ndimage.gaussian_filter(noise, 2.0 * sigma)
    band /= max(float(band.std()), 1e-6)
    width = strut_fraction / math.sqrt(1.0 - strut_fraction**2)
    occupancy = np.exp(-0.5 * (band / np.float32(width)) ** 2)
    if lacuna_fraction > 0:
        coarse = ndimage.gaussian_filter(
            rng.standard_normal(shape, dtype=np.float32), 1.2 / spacing
        )
        coarse /= max(float(coarse.std()), 1e-6)
        threshold = float(special.ndtri(1.0 - lacuna_fraction))
        occupancy *= 1.0 / (1.0 + np.exp((coarse - np.float32(threshold)) / np.float32(0.15)))
    return occupancy.astype(np.float32)


def paint_body(
    image: np.ndarray,
    canvas: Canvas,
    vb: Vertebra,
    z_offset_mm: float,
    rng: np.random.Generator,
    marrow_vein_hu: float,
) -> np.ndarray:
    """Paint the vertebral body (cortex, trabecular bone, basivertebral vein).

    Args:
        image: float32 [H, W] HU image, painted in place.
        canvas: The slice's pixel grid.
        vb: The vertebra.
        z_offset_mm: Height of the slice relative to mid-body (the body widens away from it).
        rng: Random generator of this slice.
        marrow_vein_hu: HU of the blood in the basivertebral vein.

    Returns:
        bool [H, W] mask of the whole vertebral body (cortex + trabecular bone, no
        posterior elements): the object the annotation box encloses.

    """
    body = VertebralBody(vb, z_offset_mm)
    found = canvas.mask(body)
    if found is None:
        raise ValueError(f"{vb.level}: vertebral body outside the image")
    win, inside = found
    # Partial volume of the cortex: the share of each pixel lying within cortex_mm of the
    # outline (a pixel's centre is about edt - 0.5 pixels deep).
    depth_px = ndimage.distance_transform_edt(inside).astype(np.float32)
    cortex_share = np.clip(vb.cortex_mm / canvas.spacing - (depth_px - 1.0), 0.0, 1.0)
    trabecular = inside & (cortex_share < 1.0)
    core = cortex_share == 0.0
    occupancy = trabecular_field(rng, inside.shape, canvas.spacing, vb.texture_cue)
    marrow = float(np.clip(35.0 + 22.0 * vb.texture_cue, -60.0, 50.0))
    strut_hu = (vb.trabecular_hu - marrow) / max(float(occupancy[core].mean()), 1e-3)
    spongy = marrow + strut_hu * occupancy
    share = cortex_share[trabecular]
    patch = image[win]
    patch[inside] = vb.cortex_hu
    patch[trabecular] = share * vb.cortex_hu + (1.0 - share) * spongy[trabecular]
    b = vb.half_depth * (1.0 + WAIST_PER_MM2 * z_offset_mm**2)
    vein = Capsule(*vb.point(0.0, b - vb.notch - 4.5), *vb.point(0.0, b - vb.notch + 1.0), 1.4, 2.0)
    canvas.paint(image, Fill(vein, marrow_vein_hu))
    mask = np.zeros(image.shape, dtype=bool)
    mask[win] = inside
    return mask
