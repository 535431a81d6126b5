"""Deterministic CT-like phantoms with labelled anatomy from all nine groups: the embedded demo cohort's images.

Anatomy is laid out in a human-sized body frame (RAS mm: +x subject right, +y anterior, +z superior; pelvis floor
at z=0, vertex at z~950) and shrunk by SCALE so that demo volumes stay small enough for CPU nnU-Net. Shapes are
evaluated in world coordinates, so any voxel grid (spacing, LPS or RAS storage, field of view) samples the same
body: a phantom in LPS orientation really is the same anatomy stored the other way round.

Every structure is a boolean mask under its unified name (config/structures.tsv); masks of different groups may
overlap (heart vs. heart chambers), as in the real label space. Intensities are realistic HU per tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SCALE = 0.35  # anatomy shrink factor: a 95 cm body becomes 33 cm, about 0.8 M voxels at 1.5 mm
MIN_RADIUS_MM = 2.5  # thin structures (ribs, vessels) stay at least ~2 voxels thick at 1.5 mm

# Field-of-view presets along z (human-scale mm), as sources crop bodies differently.
REGIONS = {
    "wholebody": (-150.0, 960.0),
    "torso": (60.0, 680.0),
    "abdomen": (120.0, 460.0),
    "thorax": (380.0, 700.0),
    "head": (660.0, 960.0),
}

HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 50.0,
    "lung": -850.0,
    "bone_cortical": 1000.0,
    "bone_cancellous": 350.0,
    "liver": 60.0,
    "spleen": 50.0,
    "kidney": 35.0,
    "blood": 45.0,
    "contrast_vessel": 180.0,
    "brain_gray": 40.0,
    "brain_white": 28.0,
    "csf": 8.0,
    "soft": 30.0,
    "water": 5.0,
    "eye": 12.0,
    "bowel": 20.0,
    "gland": 45.0,
}


@dataclass(frozen=True)
class PhantomGrid:
    shape: tuple[int, int, int]
    affine: np.ndarray


def make_grid(region: str, spacing=(1.5, 1.5, 1.5), orientation: str = "RAS", margin_mm: float = 10.0) -> PhantomGrid:
    """A voxel grid covering the body width and the region's z range, stored in RAS or LPS voxel order."""
    z0, z1 = (v * SCALE for v in REGIONS[region])
    half = np.array([175.0 * SCALE + margin_mm, 130.0 * SCALE + margin_mm])
    lo = np.array([-half[0], -half[1], z0])
    hi = np.array([half[0], half[1], z1])
    spacing = np.asarray(spacing, dtype=float)
    shape = tuple(int(np.ceil((h - l) / s)) + 1 for l, h, s in zip(lo, hi, spacing))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = lo
    if orientation == "LPS":  # store x and y reversed: x and y indices run toward the subject's left and posterior
        affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
        affine[:3, 3] = [hi[0], hi[1], lo[2]]
    elif orientation != "RAS":
        raise ValueError(f"orientation must be RAS or LPS, not {orientation!r}")
    return PhantomGrid(shape=shape, affine=affine)


class _Body:
    """Evaluates shapes on world coordinates (human mm scaled by SCALE) with a per-subject jitter."""

    def __init__(self, grid: PhantomGrid, rng: np.random.Generator):
        idx = np.indices(grid.shape, dtype=np.float32).reshape(3, -1)
        world = grid.affine[:3, :3].astype(np.float32) @ idx + grid.affine[:3, 3:4].astype(np.float32)
        # Back to human-scale body coordinates; the jitter makes subjects differ in size and position.
        self.size = float(rng.uniform(0.93, 1.07))
        self.shift = rng.uniform(-6.0, 6.0, size=3).astype(np.float32)
        body = world / (SCALE * self.size) - self.shift[:, None]
        self.x, self.y, self.z = (c.reshape(grid.shape) for c in body)
        self.shape = grid.shape
        self.rng = rng
        # An axis-aligned grid (the phantom grids are): x varies along the first index only, y the second, z the
        # third; their 1-D axes let the shapes be evaluated on boxes (_on_box). Any other grid: the whole grid.
        axes = (self.x[:, 0, 0], self.y[0, :, 0], self.z[0, 0, :])
        aligned = all(np.array_equal(c, np.broadcast_to(a.reshape(shape), c.shape))
                      for c, a, shape in zip((self.x, self.y, self.z), axes, ((-1, 1, 1), (1, -1, 1), (1, 1, -1))))
        self._axes = axes if aligned else None

    def ellipsoid(self, center, radii) -> np.ndarray:
        r = [max(v, MIN_RADIUS_MM / SCALE) for v in radii]
        return self._on_box(
            lambda x, y, z: ((x - center[0]) / r[0]) ** 2 + ((y - center[1]) / r[1]) ** 2
            + ((z - center[2]) / r[2]) ** 2 <= 1.0,
            # each term alone within 1 (the others are >= 0): the box where the sum can be
            lambda x: ((x - center[0]) / r[0]) ** 2 <= 1.0,
            lambda y: ((y - center[1]) / r[1]) ** 2 <= 1.0,
            lambda z: ((z - center[2]) / r[2]) ** 2 <= 1.0)

    def cylinder(self, center_xy, radius, z_range, radii_xy=None) -> np.ndarray:
        rx, ry = radii_xy if radii_xy else (radius, radius)
        rx, ry = max(rx, MIN_RADIUS_MM / SCALE), max(ry, MIN_RADIUS_MM / SCALE)
        return self._on_box(
            lambda x, y, z: (((x - center_xy[0]) / rx) ** 2 + ((y - center_xy[1]) / ry) ** 2 <= 1.0)
            & (z >= z_range[0]) & (z < z_range[1]),
            lambda x: ((x - center_xy[0]) / rx) ** 2 <= 1.0,
            lambda y: ((y - center_xy[1]) / ry) ** 2 <= 1.0,
            lambda z: (z >= z_range[0]) & (z < z_range[1]))

    def box(self, lo, hi) -> np.ndarray:
        return self._on_box(
            lambda x, y, z: (x >= lo[0]) & (x < hi[0]) & (y >= lo[1]) & (y < hi[1]) & (z >= lo[2]) & (z < hi[2]),
            lambda x: (x >= lo[0]) & (x < hi[0]),
            lambda y: (y >= lo[1]) & (y < hi[1]),
            lambda z: (z >= lo[2]) & (z < hi[2]))

    def _on_box(self, shape_test, x_test, y_test, z_test) -> np.ndarray:
        """The mask of `shape_test(x, y, z)`. On an axis-aligned grid it is evaluated only on the index box where
        every per-axis necessary condition holds (outside it the shape is empty), with the same float32 coordinates
        and the same arithmetic per voxel, so the mask is the one the whole grid would give, in a fraction of the
        time (a demo subject's ~130 shapes: most of the cohort's build time on the whole grid)."""
        if self._axes is None:
            return shape_test(self.x, self.y, self.z)
        out = np.zeros(self.shape, dtype=bool)
        box = []
        for axis, (coords, test) in enumerate(zip(self._axes, (x_test, y_test, z_test))):
            hit = np.flatnonzero(test(coords))
            if not len(hit):
                return out
            box.append(slice(hit[0], hit[-1] + 1))
        x, y, z = (c[b] for c, b in zip(self._axes, box))
        out[tuple(box)] = shape_test(x[:, None, None], y[None, :, None], z[None, None, :])
        return out

    def tube(self, points: np.ndarray, radius: float) -> np.ndarray:
        """Union of balls along a polyline (ribs, vessels)."""
        radius = max(radius, MIN_RADIUS_MM / SCALE)
        out = np.zeros(self.shape, dtype=bool)
        lo = points.min(axis=0) - radius
        hi = points.max(axis=0) + radius
        sel = self.box(lo, hi)
        if not sel.any():
            return out
        xs, ys, zs = self.x[sel], self.y[sel], self.z[sel]
        hit = np.zeros(xs.shape, dtype=bool)
        for p in points:
            hit |= (xs - p[0]) ** 2 + (ys - p[1]) ** 2 + (zs - p[2]) ** 2 <= radius**2
        out[sel] = hit
        return out


# Vertebrae from L5 (lowest) to C1, their z centres in the body frame; 24 levels as in group 552.
VERTEBRAE = [f"vertebrae_{n}" for n in ["L5", "L4", "L3", "L2", "L1"]] + [
    f"vertebrae_T{i}" for i in range(12, 0, -1)
] + [f"vertebrae_C{i}" for i in range(7, 0, -1)]
_VERT_Z0, _VERT_STEP = 160.0, 24.5
SPINE_Y = -70.0


def vertebra_z(name: str) -> float:
    return _VERT_Z0 + VERTEBRAE.index(name) * _VERT_STEP


def make_phantom(grid: PhantomGrid, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return (HU image as int16, {structure name: mask}) for one subject sampled on `grid`."""
    rng = np.random.default_rng(seed)
    b = _Body(grid, rng)
    m: dict[str, np.ndarray] = {}

    # Body wall: skin-fat (subcutaneous tissue) over a muscle layer over the cavities.
    torso = b.cylinder((0, 0), 0, (-200, 650), radii_xy=(160, 112))
    neck = b.cylinder((0, -10), 55, (600, 740))
    head = b.ellipsoid((0, 5, 830), (78, 98, 118))
    legs = b.cylinder((55, 0), 55, (-200, 40)) | b.cylinder((-55, 0), 55, (-200, 40))
    body = torso | neck | head | legs
    inner_torso = b.cylinder((0, 0), 0, (-200, 650), radii_xy=(145, 97))
    cavity_torso = b.cylinder((0, 0), 0, (-200, 650), radii_xy=(128, 82))
    m["subcutaneous_tissue"] = torso & ~inner_torso
    m["muscle"] = inner_torso & ~cavity_torso & (b.z < 640)
    m["thoracic_cavity"] = cavity_torso & (b.z >= 420) & (b.z < 640)
    m["abdominal_cavity"] = cavity_torso & (b.z >= 110) & (b.z < 420)

    # Lungs: right lung (+x) has three lobes, left two; split by z planes.
    lung_r = b.ellipsoid((62, -5, 540), (52, 62, 100)) & m["thoracic_cavity"]
    lung_l = b.ellipsoid((-62, -5, 540), (52, 62, 100)) & m["thoracic_cavity"]
    heart = b.ellipsoid((-15, 25, 490), (48, 42, 50))
    lung_r &= ~heart
    lung_l &= ~heart
    m["lung_upper_lobe_right"] = lung_r & (b.z >= 575)
    m["lung_middle_lobe_right"] = lung_r & (b.z >= 515) & (b.z < 575)
    m["lung_lower_lobe_right"] = lung_r & (b.z < 515)
    m["lung_upper_lobe_left"] = lung_l & (b.z >= 545)
    m["lung_lower_lobe_left"] = lung_l & (b.z < 545)

    # Heart (group 556) and its chambers (group 553): same voxels, two label spaces.
    m["heart"] = heart
    m["heart_myocardium"] = heart & ~b.ellipsoid((-15, 25, 490), (36, 30, 38))
    inner = heart & ~m["heart_myocardium"]
    m["heart_atrium_right"] = inner & (b.x >= -15) & (b.z >= 490)
    m["heart_ventricle_right"] = inner & (b.x >= -15) & (b.z < 490)
    m["heart_atrium_left"] = inner & (b.x < -15) & (b.z >= 490)
    m["heart_ventricle_left"] = inner & (b.x < -15) & (b.z < 490)

    # Abdominal organs (group 551).
    m["liver"] = b.ellipsoid((55, 10, 365), (68, 58, 52)) & m["abdominal_cavity"]
    m["spleen"] = b.ellipsoid((-78, -25, 375), (24, 30, 36)) & ~m["liver"]
    m["stomach"] = b.ellipsoid((-40, 28, 380), (34, 24, 28)) & ~m["liver"] & ~m["spleen"]
    m["kidney_right"] = b.ellipsoid((55, -45, 300), (20, 17, 36))
    m["kidney_left"] = b.ellipsoid((-55, -45, 305), (20, 17, 36))
    m["aorta"] = b.cylinder((-12, -42), 10, (150, 530)) & ~heart
    m["inferior_vena_cava"] = b.cylinder((18, -38), 9, (150, 470)) & ~m["liver"]
    m["urinary_bladder"] = b.ellipsoid((0, 35, 95), (34, 28, 26))
    m["trachea"] = b.cylinder((0, 12), 9, (570, 720))
    m["esophagus"] = b.cylinder((0, -18), 6, (400, 720)) & ~heart

    # Spine: 24 vertebrae (body + arch around the canal), canal (556) and cord (559) through them.
    canal_y = SPINE_Y - 24
    spinal_canal = b.cylinder((0, canal_y), 8, (130, 770))
    m["spinal_canal"] = spinal_canal
    m["spinal_cord"] = b.cylinder((0, canal_y), 4.5, (130, 770))
    for name in VERTEBRAE:
        zc = vertebra_z(name)
        shrink = 0.7 if name.startswith("vertebrae_C") else 1.0
        vbody = b.cylinder((0, SPINE_Y), 18 * shrink, (zc - 10, zc + 10))
        arch = b.cylinder((0, canal_y), 15 * shrink, (zc - 8, zc + 8)) & ~spinal_canal
        m[name] = (vbody | arch) & ~spinal_canal

    # Ribs (group 555): T1..T12 pairs, tubes from the vertebral arch around the body wall; they touch the spine.
    for i in range(1, 13):
        zc = vertebra_z(f"vertebrae_T{i}")
        for side, sign in (("right", 1.0), ("left", -1.0)):
            t = np.linspace(0.0, 1.0, 40)
            angle = -0.5 * np.pi + t * (0.72 * np.pi if i < 11 else 0.45 * np.pi)
            x = np.where(t < 0.08, sign * (14 + t / 0.08 * 20), sign * np.maximum(34, 120 * np.cos(angle)))
            y = np.where(t < 0.08, canal_y + 4, -5 + 82 * np.sin(angle))
            y = np.maximum(y, canal_y + 4)
            z = zc - 18 * t
            m[f"rib_{side}_{i}"] = b.tube(np.stack([x, y, z], axis=1), 4.5)

    m["sternum"] = b.box((-12, 70, 440), (12, 86, 610))

    # Pelvis and legs (group 554).
    m["sacrum"] = b.ellipsoid((0, SPINE_Y + 5, 125), (26, 16, 30)) & ~m["vertebrae_L5"]
    for side, sign in (("right", 1.0), ("left", -1.0)):
        m[f"hip_{side}"] = b.ellipsoid((sign * 75, -10, 115), (30, 40, 45)) & ~b.ellipsoid(
            (sign * 75, -10, 115), (20, 30, 35)
        )
        m[f"femur_{side}"] = b.ellipsoid((sign * 62, 0, 70), (16, 16, 16)) | b.cylinder((sign * 58, 0), 13, (-200, 70))
        m[f"gluteus_maximus_{side}"] = b.ellipsoid((sign * 70, -75, 90), (38, 22, 45)) & ~m[f"hip_{side}"]
        m[f"iliopsoas_{side}"] = b.cylinder((sign * 35, -45), 12, (110, 300)) & ~m[f"kidney_{side}"]

    # Head (groups 553, 557, 558): scalp, skull (compact outer, spongy inner), CSF, gray and white matter.
    skull_outer = b.ellipsoid((0, 5, 840), (72, 90, 104))
    skull_inner = b.ellipsoid((0, 5, 842), (64, 82, 96))
    brain = b.ellipsoid((0, 5, 842), (60, 78, 92))
    white = b.ellipsoid((0, 5, 842), (48, 64, 76))
    m["brain"] = brain
    m["gray matter"] = brain & ~white
    m["white matter"] = white
    m["csf"] = skull_inner & ~brain
    m["spongy bone"] = b.ellipsoid((0, 5, 840), (68, 86, 100)) & ~skull_inner
    m["compact bone"] = skull_outer & ~m["spongy bone"] & ~skull_inner
    m["scalp"] = head & ~skull_outer & (b.z > 790)
    for side, sign in (("R", 1.0), ("L", -1.0)):
        eye = b.ellipsoid((sign * 30, 72, 800), (12, 12, 12))
        m[f"OAR_Eye_A{side}"] = eye & (b.y >= 78)
        m[f"OAR_Eye_P{side}"] = eye & (b.y < 78)
        m[f"OAR_Parotid_{side}"] = b.ellipsoid((sign * 55, 0, 760), (12, 16, 20))
    m["eye balls"] = m["OAR_Eye_AR"] | m["OAR_Eye_PR"] | m["OAR_Eye_AL"] | m["OAR_Eye_PL"]
    m["OAR_Brainstem"] = b.cylinder((0, -5), 11, (748, 790))
    mandible = b.cylinder((0, 30), 0, (725, 750), radii_xy=(52, 62)) & ~b.cylinder((0, 30), 0, (725, 750), radii_xy=(42, 52))
    m["OAR_Bone_Mandible"] = mandible & (b.y > 20)
    # Face (group 553): the anterior soft tissue of the head, where anonymization blurs.
    m["face"] = head & ~skull_outer & (b.y > 55) & (b.z > 730) & (b.z < 870) & ~m["eye balls"]

    m["bones"] = np.zeros(grid.shape, dtype=bool)
    for name in [*VERTEBRAE, "sternum", "sacrum", "hip_left", "hip_right", "femur_left", "femur_right",
                 "compact bone", "spongy bone", "OAR_Bone_Mandible", *[k for k in m if k.startswith("rib_")]]:
        m["bones"] |= m[name]

    image = _intensities(b, m, body, rng)
    return image, m


def _intensities(b: _Body, m: dict[str, np.ndarray], body: np.ndarray, rng) -> np.ndarray:
    hu = np.full(b.shape, HU["air"], dtype=np.float32)
    paint = [
        (body, "fat"),
        (m["muscle"] | m["thoracic_cavity"] | m["abdominal_cavity"], "muscle"),
        (m["abdominal_cavity"], "bowel"),
        (m["thoracic_cavity"], "soft"),
        (m["lung_upper_lobe_right"] | m["lung_middle_lobe_right"] | m["lung_lower_lobe_right"]
         | m["lung_upper_lobe_left"] | m["lung_lower_lobe_left"], "lung"),
        (m["heart"], "blood"),
        (m["heart_myocardium"], "muscle"),
        (m["liver"], "liver"),
        (m["spleen"], "spleen"),
        (m["stomach"], "bowel"),
        (m["kidney_right"] | m["kidney_left"], "kidney"),
        (m["aorta"] | m["inferior_vena_cava"], "contrast_vessel"),
        (m["urinary_bladder"], "water"),
        (m["gluteus_maximus_left"] | m["gluteus_maximus_right"] | m["iliopsoas_left"] | m["iliopsoas_right"], "muscle"),
        (m["bones"], "bone_cancellous"),
        (m["compact bone"], "bone_cortical"),
        (m["spinal_canal"], "csf"),
        (m["spinal_cord"], "brain_white"),
        (m["csf"], "csf"),
        (m["gray matter"], "brain_gray"),
        (m["white matter"], "brain_white"),
        (m["eye balls"], "eye"),
        (m["OAR_Parotid_L"] | m["OAR_Parotid_R"], "gland"),
        (m["OAR_Brainstem"], "brain_white"),
        (m["trachea"], "air"),
    ]
    for mask, tissue in paint:
        hu[mask] = HU[tissue]
    # Cortical rims on long bones and vertebrae: the outer voxel layer is denser.
    spine = np.zeros(b.shape, dtype=bool)
    for name in VERTEBRAE:
        spine |= m[name]
    rim = spine & ~ndimage.binary_erosion(spine)
    hu[rim] = HU["bone_cortical"]
    hu = ndimage.gaussian_filter(hu, 0.6)  # partial-volume blur
    hu += rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)  # quantum noise
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
