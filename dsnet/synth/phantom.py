"""Render one axial lumbar CT slice: anatomy, then the scanner (calibration, blur, noise).

The pipeline for a slice, all vectorised numpy on a float32 HU image of the scan's matrix
(512 x 512 for the standard scan; `sample_variant` draws other matrices, spacings,
targeted fields of view and table heights):

1. paint soft tissue (`dsnet.synth.anatomy`), posterior elements (`dsnet.synth.bone`) and
   the scanner table - the level's background, shared by its slices - in the anatomy
   frame, placed by the patient's pose (roll and off-centre position: the small
   rotations/translations of real positioning);
2. the vertebral body of this slice (height-dependent outline, fresh trabecular texture);
3. the scan's calibration offset, added to every tissue;
4. white noise, then one Gaussian point-spread blur (partial volume; it also gives the
   noise the correlated texture of filtered back-projection) scaled so that the noise
   standard deviation after the blur is the scan's noise level;
5. occasionally, beam-hardening-like streaks through the spine;
6. the reconstruction circle: pixels outside it are -1024 HU (stored 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from dsnet.synth import anatomy, bone
from dsnet.synth.population import PatientTruth
from dsnet.synth.shapes import Canvas, Pose

IMAGE_SIZE = 512
HU_MIN, HU_MAX = -1024.0, 3071.0
SPACING_RANGE = (0.6, 0.9)
VARIANT_MATRICES = (128, 256, 512)
VARIANT_SPACING_RANGE = (0.5, 1.0)
MIN_FOV_MM = 84.0  # smallest targeted field of view (128 px at >= 0.66 mm: pydicom's CT_small)
SCAN_FIELD_MM = 500.0  # diameter of the scanner's measured field, centred on the isocentre
VARIANT_TABLE_SHIFT_MM = 30.0  # table height change: the patient moves up/down this much
TARGETED_MARGIN_MM = 60.0  # a field of view narrower than the trunk + this is targeted
VARIANT_BODY_WIDTH = (0.62, 1.0)  # variant patients' body width (and muscles) x this
VARIANT_BODY_DEPTH = (0.8, 1.05)  # ... and body depth x this, drawn on its own
STREAK_PROBABILITY = 0.12
LEVEL_PITCH_MM = 36.0  # body height + disc, centre to centre
CALIBRATION_SD_HU = 9.0


@dataclass(frozen=True)
class Scan:
    """Acquisition and reconstruction settings of one patient's scan.

    Attributes:
        spacing: Pixel spacing (mm), reconstruction field of view / matrix.
        slice_thickness: Reconstructed slice thickness (mm).
        kernel: Reconstruction kernel name (DICOM ConvolutionKernel).
        noise_sd: Image noise standard deviation (HU) after the point-spread blur.
        psf_sigma_mm: Gaussian sigma of the in-plane point-spread function (mm).
        calibration_hu: Offset added to every tissue HU (scanner calibration drift).
        pose_angle_deg: Roll of the patient about the table axis (degrees).
        trunk_xy: Scanner position (mm) of the trunk outline's centre (off-centring).
        table_gap: Distance from the posterior skin to the table top (mm).
        l1_z: Table position (mm) of the mid-height of L1; lower levels are caudal.
        matrix: Rows = columns of the reconstruction.
        fov_centre_xy: Scanner position (mm) of the centre of the field of view (the
            isocentre, or the spine for a targeted reconstruction).
        targeted: A targeted reconstruction: a square crop of the scanner's measured
            field (`SCAN_FIELD_MM`), tissue up to its edges; otherwise pixels outside the
            circle inscribed in the field of view are air.

    """

    spacing: float
    slice_thickness: float
    kernel: str
    noise_sd: float
    psf_sigma_mm: float
    calibration_hu: float
    pose_angle_deg: float
    trunk_xy: tuple[float, float]
    table_gap: float
    l1_z: float
    matrix: int = IMAGE_SIZE
    fov_centre_xy: tuple[float, float] = (0.0, 0.0)
    targeted: bool = False


@dataclass(frozen=True)
class PatientScene:
    """Everything about one patient that stays fixed across their slices."""

    truth: PatientTruth
    habitus: anatomy.Habitus
    scan: Scan
    vertebrae: dict[str, bone.Vertebra]
    level_shift: dict[str, tuple[float, float]]
    level_seed: dict[str, int]


@dataclass(frozen=True)
class RenderedSlice:
    """One rendered slice.

    Attributes:
        hu: float32 [matrix, matrix] HU image in the display frame (row 0 anterior,
            column 0 patient right).
        body_mask: bool [matrix, matrix] vertebral body (cortex + trabecular bone) pixels.
        box_xyxy: (x1, y1, x2, y2) tight box of `body_mask` in pixel-edge coordinates:
            columns x1 .. x2 - 1 and rows y1 .. y2 - 1 hold body pixels.
        z: Table position of the slice (mm, DICOM patient z).

    """

    hu: np.ndarray
    body_mask: np.ndarray
    box_xyxy: tuple[int, int, int, int]
    z: float


def sample_scan(rng: np.random.Generator, habitus: anatomy.Habitus) -> Scan:
    """Draw the scan settings of one patient (field of view fitted to the trunk)."""
    fov = float(
        np.clip(
            round(habitus.width + 25.0 + rng.uniform(0.0, 70.0)), *(512 * s for s in SPACING_RANGE)
        )
    )
    return Scan(
        spacing=fov / IMAGE_SIZE,
        slice_thickness=float(rng.choice([1.0, 1.25, 2.0, 2.5])),
        kernel=str(rng.choice(["STANDARD", "B30f", "FC18", "SOFT"])),
        noise_sd=float(
            np.clip(10.0 + 0.05 * (habitus.width - 265.0) + rng.normal(0.0, 3.0), 10.0, 25.0)
        ),
        psf_sigma_mm=float(rng.uniform(0.35, 0.6)),
        calibration_hu=float(rng.normal(0.0, CALIBRATION_SD_HU)),
        pose_angle_deg=float(rng.normal(0.0, 2.5)),
        trunk_xy=(float(rng.normal(0.0, 8.0)), float(rng.normal(-5.0, 8.0))),
        table_gap=float(rng.uniform(0.0, 4.0)),
        l1_z=float(rng.uniform(-60.0, 60.0)),
    )


def sample_variant(rng: np.random.Generator, scene: PatientScene) -> PatientScene:
    """Re-draw the reconstruction of a patient as a variant scan.

    Matrix 128, 256 or 512, pixel spacing uniform in `VARIANT_SPACING_RANGE` but never a
    field of view under `MIN_FOV_MM` (a 128 matrix: 0.66-1.0 mm, 84-128 mm), the table
    moved up or down by up to `VARIANT_TABLE_SHIFT_MM`; a field of view narrower than the
    trunk plus `TARGETED_MARGIN_MM` is a targeted reconstruction centred on the spine:
    between the vertebral body's centre and up to 20 mm behind it (towards the canal, where
    pydicom's ``CT_small.dcm`` is centred), ± 4 mm. The vertebral bodies are resized
    (`resize_bodies`): width x uniform `VARIANT_BODY_WIDTH`, depth x uniform
    `VARIANT_BODY_DEPTH`, so L1 bodies come 24-49 mm wide and from 1.8 to 0.8 times as
    wide as deep - below adult lumbar size and as round as a thoracic body, a margin so
    that small or round bodies (small elderly women, the thoracolumbar junction, or
    ``CT_small.dcm``'s thoracic body, 26 mm wide and 25 mm deep) are still found. Every
    other setting stays as drawn.

    Args:
        rng: The variant's own generator (so standard patients are drawn as before).
        scene: The patient as `build_scene` drew it.

    Returns:
        The scene with the variant `Scan`.

    """
    scan = scene.scan
    matrix = int(rng.choice(VARIANT_MATRICES))
    low, high = VARIANT_SPACING_RANGE
    spacing = float(rng.uniform(max(low, MIN_FOV_MM / matrix), high))
    shift = float(rng.uniform(-VARIANT_TABLE_SHIFT_MM, VARIANT_TABLE_SHIFT_MM))
    jitter = (float(rng.normal(0.0, 4.0)), float(rng.normal(0.0, 4.0) + rng.uniform(0.0, 20.0)))
    scene = resize_bodies(
        scene, float(rng.uniform(*VARIANT_BODY_WIDTH)), float(rng.uniform(*VARIANT_BODY_DEPTH))
    )
    trunk_xy = (scan.trunk_xy[0], scan.trunk_xy[1] + shift)
    variant = replace(scan, matrix=matrix, spacing=spacing, trunk_xy=trunk_xy)
    if matrix * spacing >= scene.habitus.width + TARGETED_MARGIN_MM:
        return replace(scene, scan=variant)
    levels = [_pose(replace(scene, scan=variant), vb).origin_xy for vb in scene.vertebrae.values()]
    spine = np.mean(np.asarray(levels), axis=0)
    centre = (float(spine[0]) + jitter[0], float(spine[1]) + jitter[1])
    return replace(scene, scan=replace(variant, fov_centre_xy=centre, targeted=True))


def resize_bodies(scene: PatientScene, width: float, depth: float) -> PatientScene:
    """Scale every vertebral body's width by `width` and its depth and notch by `depth`.

    The muscles, which `anatomy.Habitus.skeleton` sizes, follow the width; the posterior
    elements keep their size and move with the body's posterior wall, and the canal
    narrows only where a narrow body needs it (`bone.CANAL_BODY_RATIO`). Bone density
    and every other draw are unchanged.
    """
    vertebrae = {
        name: replace(
            vb,
            half_width=vb.half_width * width,
            half_depth=vb.half_depth * depth,
            notch=vb.notch * depth,
        )
        for name, vb in scene.vertebrae.items()
    }
    habitus = replace(scene.habitus, skeleton=scene.habitus.skeleton * width)
    return replace(scene, habitus=habitus, vertebrae=vertebrae)


def build_scene(rng: np.random.Generator, truth: PatientTruth) -> PatientScene:
    """Draw habitus, scan and vertebral shapes of one patient."""
    habitus = anatomy.sample_habitus(rng, truth.sex, truth.age)
    scan = sample_scan(rng, habitus)
    vertebrae = {
        v.vertebra: bone.sample_vertebra(rng, v, habitus.skeleton) for v in truth.vertebrae
    }
    level_shift = {
        name: (float(rng.normal(0.0, 3.0)), float(rng.normal(0.0, 2.0))) for name in vertebrae
    }
    level_seed = {name: int(rng.integers(2**63)) for name in vertebrae}
    return PatientScene(truth, habitus, scan, vertebrae, level_shift, level_seed)


def slice_z(scene: PatientScene, level: str, z_offset_mm: float) -> float:
    """Table position (DICOM z, mm; larger is cranial) of a slice `z_offset_mm` above mid-body."""
    return scene.scan.l1_z - LEVEL_PITCH_MM * anatomy.LEVEL_INDEX[level] + z_offset_mm


def _pose(scene: PatientScene, vb: bone.Vertebra) -> Pose:
    """Place the anatomy frame: trunk centre at `trunk_xy`, rolled, plus a per-level shift."""
    trunk_v = anatomy.trunk_centre_v(scene.habitus, vb)
    angle = scene.scan.pose_angle_deg
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    du, dv = scene.level_shift[vb.level]
    u, v = du, dv - trunk_v  # vertebral centre relative to the trunk centre
    x = scene.scan.trunk_xy[0] + cos * u - sin * v
    y = scene.scan.trunk_xy[1] + sin * u + cos * v
    return Pose(angle, (x, y))


@dataclass(frozen=True)
class LevelBackground:
    """Everything of a slice through one level except the vertebral body and the scanner.

    Rendered once per (patient, level) and shared by that level's slices.

    Attributes:
        canvas: The pixel grid placed by the patient's pose at this level.
        hu: float32 [matrix, matrix] soft tissue, posterior elements and table (read-only).
        outside: bool [matrix, matrix] pixels outside the reconstruction circle (air).
    """

    canvas: Canvas
    hu: np.ndarray
    outside: np.ndarray


def level_background(scene: PatientScene, level: str) -> LevelBackground:
    """Paint soft tissue, posterior elements and table of one level of one patient."""
    vb = scene.vertebrae[level]
    hab, scan = scene.habitus, scene.scan
    level_rng = np.random.default_rng(scene.level_seed[level])  # same organs on every slice
    canvas = Canvas(scan.matrix, scan.spacing, _pose(scene, vb), scan.fov_centre_xy)
    hu = np.full((scan.matrix, scan.matrix), anatomy.AIR_HU, dtype=np.float32)
    layers = (
        anatomy.trunk_layers(hab, vb)
        + anatomy.bowel_layers(level_rng, hab, vb)
        + anatomy.organ_layers(level_rng, hab, vb)
        + anatomy.muscle_layers(hab, vb)
        + anatomy.vessel_layers(level_rng, hab, vb)
        + bone.posterior_layers(vb, tissue_csf=8.0, tissue_fat=hab.fat_hu + 20.0)
    )
    for layer in layers:
        canvas.paint(hu, layer)
    _paint_table(hu, canvas, scene)
    if scan.targeted:  # a crop of the measured field: its edge is far outside the crop
        outside = canvas.x**2 + canvas.y**2 > np.float32(SCAN_FIELD_MM / 2) ** 2
    else:
        cx, cy = (np.float32(c) for c in scan.fov_centre_xy)
        radius = np.float32(scan.matrix * scan.spacing / 2)
        outside = (canvas.x - cx) ** 2 + (canvas.y - cy) ** 2 > radius**2
    return LevelBackground(canvas, hu, outside)


def render_slice(
    scene: PatientScene,
    level: str,
    z_offset_mm: float,
    rng: np.random.Generator,
    background: LevelBackground | None = None,
) -> RenderedSlice:
    """Render one slice through vertebra `level`, `z_offset_mm` above its mid-height.

    Args:
        scene: The patient.
        level: ``L1`` .. ``L4``.
        z_offset_mm: Offset from mid-body (mm), a few mm either way.
        rng: Random generator of this slice (trabecular texture, noise, artefacts).
        background: `level_background(scene, level)` if already rendered (it is the same
            for every slice of the level); rendered here when None.

    Returns:
        The HU image, the body mask and its tight box.
    """
    vb = scene.vertebrae[level]
    scan = scene.scan
    background = background or level_background(scene, level)
    hu = background.hu.copy()
    body_mask = bone.paint_body(hu, background.canvas, vb, z_offset_mm, rng, scene.habitus.blood_hu)
    hu += np.float32(scan.calibration_hu)
    _add_noise_and_blur(hu, scan, rng)
    if rng.random() < STREAK_PROBABILITY:
        _add_streaks(hu, background.canvas, rng)
    hu[background.outside] = HU_MIN
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    body_mask &= ~background.outside  # the box holds what the reconstruction shows
    rows = np.flatnonzero(body_mask.any(axis=1))
    cols = np.flatnonzero(body_mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return RenderedSlice(hu, body_mask, box, slice_z(scene, level, z_offset_mm))


def _paint_table(hu: np.ndarray, canvas: Canvas, scene: PatientScene) -> None:
    """A 4 mm curved table top (scanner frame) just behind the patient's back."""
    top = scene.scan.trunk_xy[1] + scene.habitus.depth / 2 - 4.0 + scene.scan.table_gap
    radius, thickness = 700.0, 4.0
    half_fov = canvas.size * canvas.spacing / 2 + abs(canvas.centre_xy[0])
    rise = radius - math.sqrt(radius**2 - half_fov**2)  # the arc climbs this much at the edges
    row0 = max(int(canvas.pixel(0.0, top - rise)[0]) - 1, 0)
    row1 = min(int(canvas.pixel(0.0, top + thickness)[0]) + 2, canvas.size)
    if row0 >= row1:
        return
    rows = slice(row0, row1)
    dist = np.sqrt(canvas.x[rows] ** 2 + (canvas.y[rows] - np.float32(top - radius)) ** 2)
    band = (dist >= radius) & (dist < radius + thickness) & (hu[rows] < -500.0)
    hu[rows][band] = anatomy.TABLE_HU


def _blur_noise_gain(sigma_px: float) -> float:
    """Standard deviation of unit white noise after the 2-D Gaussian blur `sigma_px`."""
    impulse = np.zeros(65)
    impulse[32] = 1.0
    kernel = ndimage.gaussian_filter1d(impulse, sigma_px)
    return float(np.sum(kernel**2))  # separable: sqrt(sum k2d^2) = sum k1d^2


def _add_noise_and_blur(hu: np.ndarray, scan: Scan, rng: np.random.Generator) -> None:
    """Add white noise, then blur image and noise together with the scan's PSF (in place)."""
    sigma_px = scan.psf_sigma_mm / scan.spacing
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    noise *= np.float32(scan.noise_sd / _blur_noise_gain(sigma_px))
    hu += noise
    ndimage.gaussian_filter(hu, sigma_px, output=hu, truncate=3.0)


def _add_streaks(hu: np.ndarray, canvas: Canvas, rng: np.random.Generator) -> None:
    """Two to four bright/dark lines through the spine, fading with distance (in place)."""
    cx, cy = canvas.pose.origin_xy
    cx += rng.normal(0.0, 15.0)
    cy += rng.normal(0.0, 15.0)
    dx, dy = canvas.x - np.float32(cx), canvas.y - np.float32(cy)
    fade = np.exp(-np.sqrt(dx**2 + dy**2) / np.float32(120.0))
    for _ in range(int(rng.integers(2, 5))):
        theta = rng.uniform(0.0, math.pi)
        across = dx * np.float32(math.sin(theta)) - dy * np.float32(math.cos(theta))
        width = rng.uniform(0.6, 1.4) * canvas.spacing
        amplitude = rng.choice([-1.0, 1.0]) * rng.uniform(40.0, 110.0)
        hu += np.float32(amplitude) * fade * np.exp(-0.5 * (across / np.float32(width)) ** 2)
