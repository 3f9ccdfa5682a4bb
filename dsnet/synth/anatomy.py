"""Soft tissue of an axial lumbar slice: trunk outline, fat, muscles, organs, vessels, bowel.

Everything is laid out in the anatomy frame (`dsnet.synth.shapes`: origin at the centre of
the vertebral body, +u patient left, +v posterior, mm) relative to the patient's habitus
and the vertebra, as a list of `Fill` layers painted in order (later layers win).
Unenhanced CT values: fat about -100 HU, muscle 40-55, blood 40, liver 55-65, kidney 30,
bowel wall 40, fluid 10-20, gas -950.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dsnet.synth.bone import TRANSVERSE_LENGTH, Vertebra
from dsnet.synth.shapes import Capsule, Ellipse, Fill, Intersection

LEVEL_INDEX = {"L1": 0, "L2": 1, "L3": 2, "L4": 3}
PSOAS_HALF_AXES = ((7.0, 6.0), (11.0, 9.0), (15.0, 12.5), (19.0, 15.5))  # L1..L4 (mm)
KIDNEY_SCALE = {"left": (1.0, 0.95, 0.6, 0.0), "right": (0.75, 1.0, 0.8, 0.0)}  # L1..L4
LIVER_SCALE = (1.0, 0.6, 0.3, 0.0)
TABLE_HU, GAS_HU, AIR_HU = 150.0, -950.0, -1000.0


@dataclass(frozen=True)
class Habitus:
    """Body build and tissue values of one patient.

    Attributes:
        width: Trunk width, left-right (mm).
        depth: Trunk depth, antero-posterior (mm).
        fat: Anterior/lateral subcutaneous fat thickness (mm).
        wall: Abdominal wall muscle thickness (mm).
        power: Super-ellipse exponent of the trunk outline.
        skeleton: Skeletal size factor (vertebrae, canal, muscles).
        fat_hu, muscle_hu, paraspinal_hu, blood_hu, liver_hu, kidney_hu: Tissue HU
            (paraspinal muscle loses HU with age: fatty infiltration).
        calcified_aorta: Whether the aortic wall carries calcified plaques.

    """

    width: float
    depth: float
    fat: float
    wall: float
    power: float
    skeleton: float
    fat_hu: float
    muscle_hu: float
    paraspinal_hu: float
    blood_hu: float
    liver_hu: float
    kidney_hu: float
    calcified_aorta: bool


def sample_habitus(rng: np.random.Generator, sex: str, age: int) -> Habitus:
    """Draw the body build of one patient (women: more subcutaneous fat, smaller frame)."""
    male = sex == "M"
    width = float(np.clip(rng.normal(345.0 if male else 320.0, 32.0), 265.0, 420.0))
    fat = float(np.clip(rng.normal(22.0 if male else 30.0, 10.0), 6.0, 60.0))
    return Habitus(
        width=width,
        depth=float(np.clip(width * rng.normal(0.72, 0.05), 190.0, 320.0)),
        fat=fat,
        wall=float(rng.uniform(8.0, 13.0) * (1.15 if male else 1.0)),
        power=float(rng.uniform(2.0, 2.6)),
        skeleton=float(np.clip(rng.normal(1.06 if male else 0.98, 0.045), 0.88, 1.18)),
        fat_hu=float(rng.normal(-102.0, 6.0)),
        muscle_hu=float(rng.normal(50.0, 4.0)),
        paraspinal_hu=float(rng.normal(50.0 - 0.5 * (age - 50), 5.0)),
        blood_hu=float(rng.normal(42.0, 3.0)),
        liver_hu=float(rng.normal(58.0, 6.0)),
        kidney_hu=float(rng.normal(31.0, 3.0)),
        calcified_aorta=bool(rng.random() < np.clip((age - 45) / 40.0, 0.05, 0.85)),
    )


def trunk_centre_v(habitus: Habitus, vb: Vertebra) -> float:
    """V coordinate (mm) of the trunk outline's centre: posterior skin behind the spine."""
    spine_reach = vb.half_depth + 9.0 + 10.5 + 28.0  # body, canal, laminae, spinous process
    posterior_skin = spine_reach + 10.0 + 0.45 * habitus.fat + 3.0 * LEVEL_INDEX[vb.level]
    return posterior_skin - habitus.depth / 2


def trunk_layers(habitus: Habitus, vb: Vertebra) -> list[Fill]:
    """Skin, subcutaneous fat, abdominal wall muscle and the (fat-filled) cavity."""
    vc = trunk_centre_v(habitus, vb)
    half_w, half_d = habitus.width / 2, habitus.depth / 2
    posterior_skin = vc + half_d
    flat = posterior_skin - 6.0  # the back is flattened on the table
    inner_shift = 0.3 * habitus.fat
    fat_inner = (half_w - habitus.fat, half_d - 0.8 * habitus.fat)
    cavity = (fat_inner[0] - habitus.wall, fat_inner[1] - habitus.wall)
    p = habitus.power
    wall_end = vb.half_depth + 25.0  # behind this the back muscles take over from the wall
    return [
        Fill(Ellipse(0.0, vc, half_w, half_d, power=p), 25.0, v_max=flat),
        Fill(
            Ellipse(0.0, vc, half_w - 2.0, half_d - 2.0, power=p), habitus.fat_hu, v_max=flat - 2.0
        ),
        Fill(
            Ellipse(0.0, vc + inner_shift, *fat_inner, power=p), habitus.muscle_hu, v_max=wall_end
        ),
        Fill(
            Ellipse(0.0, vc + inner_shift, *cavity, power=p),
            habitus.fat_hu + 8.0,
            v_max=wall_end + 10.0,
        ),
        # linea alba: a fat gap between the recti
        Fill(
            Capsule(
                0.0,
                vc + inner_shift - fat_inner[1] - 1.0,
                0.0,
                vc + inner_shift - cavity[1] + 1.0,
                1.2,
            ),
            habitus.fat_hu,
        ),
    ]


def muscle_layers(habitus: Habitus, vb: Vertebra) -> list[Fill]:
    """Psoas, quadratus lumborum and the paraspinal muscles (erector spinae, multifidus)."""
    index = LEVEL_INDEX[vb.level]
    k = habitus.skeleton
    a, b = vb.half_width, vb.half_depth
    psoas_a, psoas_b = (s * k for s in PSOAS_HALF_AXES[index])
    tp_reach = 0.62 * a + TRANSVERSE_LENGTH[vb.level]
    layers = []
    for side in (-1.0, 1.0):
        layers.append(
            Fill(
                Ellipse(
                    side * (0.8 * a + 0.75 * psoas_a),
                    -0.2 * b + 0.3 * psoas_b,
                    psoas_a,
                    psoas_b,
                    side * -25.0,
                ),
                habitus.muscle_hu,
            )
        )
        layers.append(
            Fill(
                Ellipse(side * (tp_reach + 4.0), b + 10.0, 8.0 + 2.0 * index, 6.5, side * 20.0),
                habitus.muscle_hu,
            )
        )
        layers.append(
            Fill(
                Ellipse(side * 27.0 * k, b + 37.0, 25.0 * k, 20.0, side * 8.0),
                habitus.paraspinal_hu,
            )
        )
        layers.append(
            Fill(Ellipse(side * 10.0 * k, b + 36.0, 9.5 * k, 17.0), habitus.paraspinal_hu + 4.0)
        )
    return layers


def organ_layers(rng: np.random.Generator, habitus: Habitus, vb: Vertebra) -> list[Fill]:
    """Liver, spleen and kidneys where this level cuts them (upper levels only)."""
    index = LEVEL_INDEX[vb.level]
    vc = trunk_centre_v(habitus, vb)
    cavity_w = habitus.width / 2 - habitus.fat - habitus.wall
    cavity_d = habitus.depth / 2 - 0.8 * habitus.fat - habitus.wall
    cavity_v = vc + 0.3 * habitus.fat
    cavity = Ellipse(0.0, cavity_v, cavity_w, cavity_d, power=habitus.power)
    layers = []
    liver = LIVER_SCALE[index]
    if liver > 0:  # the right lobe fills the right upper quadrant against the wall
        lobe = Ellipse(
            -cavity_w, cavity_v + 0.1 * cavity_d, 0.8 * cavity_w * liver, 1.1 * cavity_d * liver
        )
        layers.append(Fill(Intersection(cavity, lobe), habitus.liver_hu))
    if index == 0:  # the spleen tip, left posterolateral
        tip = Ellipse(cavity_w, cavity_v + 0.45 * cavity_d, 0.3 * cavity_w, 0.4 * cavity_d)
        layers.append(Fill(Intersection(cavity, tip), habitus.liver_hu - 12.0))
    for side, name in ((-1.0, "right"), (1.0, "left")):
        scale = KIDNEY_SCALE[name][index] * rng.uniform(0.85, 1.1)
        if scale <= 0:
            continue
        cu, cv = side * (vb.half_width + 42.0 * habitus.skeleton), 8.0
        angle = side * 40.0
        layers.append(Fill(Ellipse(cu, cv, 30.0 * scale, 22.0 * scale, angle), habitus.kidney_hu))
        if index <= 1 and scale > 0.7:  # hilum: sinus fat and renal pelvis open medially-forwards
            hu, hv = cu - side * 14.0 * scale, cv - 8.0 * scale
            layers.append(
                Fill(Ellipse(hu, hv, 11.0 * scale, 7.0 * scale, angle), habitus.fat_hu + 10.0)
            )
            layers.append(Fill(Ellipse(hu, hv, 6.0 * scale, 3.5 * scale, angle), 8.0))
    return layers


def vessel_layers(rng: np.random.Generator, habitus: Habitus, vb: Vertebra) -> list[Fill]:
    """Aorta (iliac arteries at L4), IVC, optional wall calcification, mesenteric vessels."""
    index = LEVEL_INDEX[vb.level]
    b = vb.half_depth
    blood = habitus.blood_hu
    layers = [Fill(Ellipse(-0.55 * vb.half_width - 6.0, -(b + 7.0), 12.0, 7.5, 10.0), blood - 3.0)]
    if index < 3:
        radius = rng.uniform(9.0, 12.5)
        arteries = [(0.35 * vb.half_width + 3.0, -(b + radius + 2.0), radius)]
    else:
        radius = rng.uniform(5.5, 7.0)
        arteries = [(side * 13.0, -(b + radius + 3.0), radius) for side in (-1.0, 1.0)]
    for u, v, r in arteries:
        layers.append(Fill(Ellipse(u, v, r, r), blood))
        if habitus.calcified_aorta:
            for _ in range(int(rng.integers(1, 4))):
                angle = rng.uniform(0.0, 2 * math.pi)
                span = rng.uniform(0.3, 0.9)
                u0, v0 = u + r * math.cos(angle), v + r * math.sin(angle)
                u1, v1 = u + r * math.cos(angle + span), v + r * math.sin(angle + span)
                layers.append(Fill(Capsule(u0, v0, u1, v1, 0.9), float(rng.uniform(350.0, 800.0))))
    for _ in range(int(rng.integers(4, 9))):
        u = rng.uniform(-60.0, 60.0)
        v = -(b + rng.uniform(30.0, 70.0))
        layers.append(Fill(Ellipse(u, v, 1.6, 1.6), blood))
    return layers


def bowel_layers(rng: np.random.Generator, habitus: Habitus, vb: Vertebra) -> list[Fill]:
    """Bowel loops packed in the peritoneal cavity in front of the spine and vessels.

    Loop centres lie on a jittered hexagonal grid; a loop is small bowel with fluid, with
    a gas-fluid level (gas anterior: the patient is supine), or colon with mottled stool.
    Ascending and descending colon sit in the lateral gutters.
    """
    vc = trunk_centre_v(habitus, vb)
    cavity_w = habitus.width / 2 - habitus.fat - habitus.wall
    cavity_d = habitus.depth / 2 - 0.8 * habitus.fat - habitus.wall
    cavity_v = vc + 0.3 * habitus.fat
    front_of_spine = -(vb.half_depth + 26.0)
    index = LEVEL_INDEX[vb.level]
    kidney = max(KIDNEY_SCALE["left"][index], KIDNEY_SCALE["right"][index])
    retro_half_width = vb.half_width + 35.0 + 40.0 * kidney
    pitch = rng.uniform(21.0, 27.0)
    layers: list[Fill] = []
    for gu in (-0.8 * cavity_w, 0.8 * cavity_w):  # colon in the gutters
        gv = cavity_v + 0.1 * cavity_d
        layers += _loop(rng, gu, gv, rng.uniform(14.0, 20.0), "stool")
    rows = np.arange(cavity_v - cavity_d + 0.5 * pitch, vb.half_depth, pitch * 0.87)
    for i, gv in enumerate(rows):
        for gu in np.arange(-cavity_w, cavity_w, pitch) + (pitch / 2 if i % 2 else 0.0):
            u, v = gu + rng.normal(0.0, 3.0), gv + rng.normal(0.0, 3.0)
            r = rng.uniform(0.4, 0.55) * pitch
            if (u / (cavity_w - 0.6 * r)) ** 2 + ((v - cavity_v) / (cavity_d - 0.6 * r)) ** 2 > 1.0:
                continue
            if v + r > front_of_spine and abs(u) - r < retro_half_width:
                continue  # retroperitoneum: spine, vessels, psoas, kidneys
            if vb.level in ("L1", "L2") and u < -0.2 * cavity_w:
                continue  # liver territory
            if rng.random() < 0.12:
                continue  # a gap of mesenteric fat
            kind = str(rng.choice(["fluid", "gas", "stool"], p=[0.55, 0.3, 0.15]))
            layers += _loop(rng, u, v, r, kind)
    return layers


def _loop(rng: np.random.Generator, u: float, v: float, r: float, kind: str) -> list[Fill]:
    """One bowel loop: a 2 mm wall around fluid, gas over fluid, or stool with gas bubbles."""
    squash, angle = rng.uniform(0.7, 1.0), rng.uniform(0.0, 180.0)
    layers = [Fill(Ellipse(u, v, r, r * squash, angle), float(rng.uniform(35.0, 45.0)))]
    inner = Ellipse(u, v, r - 2.0, (r - 2.0) * squash, angle)
    if kind == "stool":
        layers.append(Fill(inner, float(rng.uniform(-60.0, 30.0))))
        for _ in range(int(rng.integers(3, 9))):
            bu, bv = u + rng.uniform(-0.6, 0.6) * r, v + rng.uniform(-0.6, 0.6) * r
            layers.append(Fill(Ellipse(bu, bv, *rng.uniform(1.0, 3.0, size=2)), GAS_HU))
        return layers
    layers.append(Fill(inner, float(rng.uniform(5.0, 25.0))))
    if kind == "gas":
        layers.append(Fill(inner, GAS_HU, v_max=v + rng.uniform(-0.6, 0.5) * r))
    return layers
