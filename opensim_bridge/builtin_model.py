"""kinevid's built-in full-body OpenSim model: the default when the user gives no .osim.

Built with the OpenSim API from published anthropometric tables (see
:mod:`opensim_bridge.anthropometry` for the sources and table numbers), scaled to the
subject's height and mass, for sex 'm' or 'f':

* segment lengths, masses, centres of mass and radii of gyration: de Leva (1996) Table 4;
* ankle height, eye and chin heights, foot breadth: Winter (2009) Figure 4.1;
* joint-centre breadths, oblique joint axes, coordinate names, signs and ranges:
  Rajagopal et al. (2016), so that every coordinate means what it means in Rajagopal2016.

Bodies and coordinates follow Rajagopal2016: pelvis (6 DoF to ground), femur, tibia (knee
is a simple pin: no coupled translations, no patella), talus, calcn, toes, torso (3-DoF
lumbar joint), head (welded to the torso: there is no neck coordinate), humerus (3-DoF
shoulder), ulna (elbow), radius (pro_sup), hand (2-DoF wrist). All body frames are aligned
with ground in the default pose (x forward, y up, z to the right); each body's origin is its
proximal joint centre. The default pose is upright standing with the soles on y = 0.

Display geometry is analytic (ellipsoids, cylinders, bricks, spheres) so that the GUI shows
the model without any .vtp mesh.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import opensim as osim

from . import anthropometry as anth
from .atomic import atomic_path
from .errors import InputError, ModelError

SIDES = ("r", "l")

# Coordinates, exactly Rajagopal2016's names. Ranges in degrees (metres for translations)
# are Rajagopal2016's own ranges except the shoulder's: Rajagopal2016 stops arm_flex at
# +-90 deg and arm_add at -120 deg, so an arm raised overhead (a jumping jack, a reach, a
# throw) cannot be reached, and IK with joint limits bent the pelvis through 360 deg instead
# (Sports2D demo: marker RMS 0.2-1.1 m over half a second). OpenCap's LaiUhlrich2022 lifts
# the shoulder's limits altogether; here flexion and abduction reach 180 deg (arm overhead
# either way), extension 90 deg and the third (axial) angle +-120 deg, which in this Euler
# sequence also carries part of the elevation of a raised arm. Demo, IK outliers 15 -> 4 of
# 161 frames, worst frame 1087 -> 199 mm marker RMS.
_RANGES_R = {
    "hip_flexion": (-30.0, 120.0), "hip_adduction": (-50.0, 30.0),
    "hip_rotation": (-40.0, 40.0), "knee_angle": (0.0, 120.0),
    "ankle_angle": (-40.0, 30.0), "subtalar_angle": (-20.0, 20.0),
    "mtp_angle": (-30.0, 30.0),
    "arm_flex": (-90.0, 180.0), "arm_add": (-180.0, 90.0), "arm_rot": (-120.0, 120.0),
    "elbow_flex": (0.0, 150.0), "pro_sup": (0.0, 90.0),
    "wrist_flex": (-70.0, 70.0), "wrist_dev": (-25.0, 35.0),
}
_RANGES_CENTRAL = {
    "pelvis_tilt": (-90.0, 90.0), "pelvis_list": (-90.0, 90.0),
    "pelvis_rotation": (-90.0, 90.0),
    "lumbar_extension": (-90.0, 90.0), "lumbar_bending": (-90.0, 90.0),
    "lumbar_rotation": (-90.0, 90.0),
}
_TRANSLATION_RANGES = {"pelvis_tx": (-5.0, 5.0), "pelvis_ty": (-1.0, 2.0),
                       "pelvis_tz": (-3.0, 3.0)}

COORDINATES: list[str] = (
    ["pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz"]
    + [f"{c}_{s}" for s in SIDES for c in ("hip_flexion", "hip_adduction", "hip_rotation",
                                           "knee_angle", "ankle_angle", "subtalar_angle",
                                           "mtp_angle")]
    + ["lumbar_extension", "lumbar_bending", "lumbar_rotation"]
    + [f"{c}_{s}" for s in SIDES for c in ("arm_flex", "arm_add", "arm_rot", "elbow_flex",
                                           "pro_sup", "wrist_flex", "wrist_dev")]
)
TRANSLATIONAL_COORDINATES = ("pelvis_tx", "pelvis_ty", "pelvis_tz")


def coordinate_range(name: str) -> tuple[float, float]:
    """(min, max) of a coordinate in the model's units (rad, or m for translations)."""
    if name in _TRANSLATION_RANGES:
        return _TRANSLATION_RANGES[name]
    lo_hi = _RANGES_CENTRAL.get(name)
    if lo_hi is None:
        lo_hi = _RANGES_R[name.rsplit("_", 1)[0]]
    return math.radians(lo_hi[0]), math.radians(lo_hi[1])


# Markers. The first group are the keypoints 2D pose models detect (names as in Pose2Sim's
# marker sets: HALPE-26 / BODY_25B / COCO / BlazePose hands). The second group are
# anatomical landmarks no 2D detector gives; they make every coordinate identifiable from
# markers (hip and arm axial rotation, pronation, subtalar, wrist deviation) and serve
# synthetic-data tests.
KEYPOINT_MARKERS: list[str] = (
    ["Nose", "REye", "LEye", "REar", "LEar", "Head", "Neck", "Hip"]
    + [f"{s}{p}" for s in ("R", "L") for p in
       ("Shoulder", "Elbow", "Wrist", "Index", "Pinky", "Hip", "Knee", "Ankle", "Heel",
        "BigToe", "SmallToe")]
)
ANATOMICAL_MARKERS: list[str] = (
    [f"{s}{p}" for s in ("R", "L") for p in
     ("ASIS", "PSIS", "KneeLat", "KneeMed", "MT1", "MT5", "ElbowLat", "ElbowMed",
      "RadStyl", "UlnStyl")]
)
MARKERS: list[str] = KEYPOINT_MARKERS + ANATOMICAL_MARKERS

_FOOT_SPLIT = {"talus": 0.1 / 1.5666, "toes": 0.2166 / 1.5666}
# Share of the foot's mass given to talus and toes: Rajagopal2016's proportions
# (talus 0.1 kg, toes 0.2166 kg, calcn 1.25 kg); calcn takes the rest and its CoM is placed
# so that the whole foot's CoM is de Leva's.
_TISSUE_DENSITY = 1050.0  # kg/m^3, for sizing display geometry only


@dataclass
class _Segment:
    mass: float
    com: np.ndarray            # in ground, default pose
    inertia: np.ndarray        # principal moments about the CoM, (Ixx, Iyy, Izz)


@dataclass
class _Layout:
    """Landmarks in ground at the default pose (right side; left mirrors z)."""
    height: float
    sex: str
    p: dict[str, np.ndarray] = field(default_factory=dict)
    lengths: dict[str, float] = field(default_factory=dict)
    segments: dict[str, _Segment] = field(default_factory=dict)


def _mirror_point(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return np.array([v[0], v[1], -v[2]])


def _mirror_axis(v) -> np.ndarray:
    # a rotation axis is a pseudo-vector: its mirror image across the sagittal plane keeps
    # z and flips x and y, so that a positive angle means the same motion on both sides
    v = np.asarray(v, dtype=float)
    return np.array([-v[0], -v[1], v[2]])


def _side_point(v, side: str) -> np.ndarray:
    return np.asarray(v, dtype=float) if side == "r" else _mirror_point(v)


def _side_axis(v, side: str) -> np.ndarray:
    v = np.asarray(v, dtype=float) / np.linalg.norm(v)
    return v if side == "r" else _mirror_axis(v)


def _principal(mass: float, length: float, row: anth.DeLevaSegment,
               long_axis: str = "y") -> np.ndarray:
    """Moments of inertia about the CoM from de Leva's radii of gyration.

    The sagittal radius is about the antero-posterior axis (x) and the transverse radius about
    the medio-lateral axis (z); for the foot, whose long axis is x, the sagittal radius
    goes to the remaining (vertical) axis.
    """
    r_sag = row.r_sag_pct / 100 * length
    r_trans = row.r_trans_pct / 100 * length
    r_long = row.r_long_pct / 100 * length
    if long_axis == "y":
        radii = (r_sag, r_long, r_trans)
    else:
        radii = (r_long, r_sag, r_trans)
    return mass * np.square(radii)


def _combine(parts: list[_Segment]) -> _Segment:
    """One rigid body from several (parallel-axis theorem, principal axes kept aligned)."""
    m = sum(s.mass for s in parts)
    c = sum(s.mass * s.com for s in parts) / m
    inertia = np.zeros(3)
    for s in parts:
        d = s.com - c
        inertia += s.inertia + s.mass * np.array([d[1] ** 2 + d[2] ** 2,
                                                   d[0] ** 2 + d[2] ** 2,
                                                   d[0] ** 2 + d[1] ** 2])
    return _Segment(m, c, inertia)


def _layout(height: float, mass: float, sex: str) -> _Layout:
    H = height
    lay = _Layout(height, sex)
    p, L = lay.p, lay.lengths
    row = lambda seg: anth.segment_row(sex, seg)  # noqa: E731
    frac = lambda seg: anth.length_fraction(sex, seg) * H  # noqa: E731
    mf = anth.mass_fractions(sex)
    winter = anth.WINTER_2009_FIG_4_1
    raj_scale = H / anth.RAJAGOPAL_2016_HEIGHT_M
    raj = anth.RAJAGOPAL_2016_GEOMETRY_M

    for seg in ("thigh", "shank", "upper_arm", "forearm", "hand", "foot", "lower_trunk",
                "mid_trunk", "upper_trunk", "trunk_mids", "head"):
        L[seg] = frac(seg)
    hip_w = raj["hip_jc_half_breadth"] * raj_scale
    sh_w = raj["shoulder_jc_half_breadth"] * raj_scale
    ankle_h = winter["ankle_height"] * H
    foot_b = winter["foot_breadth"] * H
    L["foot_breadth"] = foot_b
    L["ankle_height"] = ankle_h

    # Lower limb: ankle, knee and hip joint centres stacked vertically (the sagittal
    # plumb line of upright posture), shank KJC-AJC and thigh HJC-KJC from de Leva.
    p["AJC"] = np.array([0.0, ankle_h, hip_w])
    p["KJC"] = p["AJC"] + [0.0, L["shank"], 0.0]
    p["HJC"] = p["KJC"] + [0.0, L["thigh"], 0.0]
    p["MIDH"] = np.array([0.0, p["HJC"][1], 0.0])
    hip_y = p["MIDH"][1]

    # Foot: heel-to-toe-tip length from de Leva; the ankle sits over the posterior fifth
    # of the foot (Rajagopal2016's ankle lies 0.049 m in front of its heel on a ~0.26 m
    # foot: modelling choice 0.2).
    Lf = L["foot"]
    heel_x = -0.2 * Lf
    foot_scale = Lf / anth.RAJAGOPAL_2016_FOOT_M["foot_length"]
    p["STJ"] = p["AJC"] + np.array(anth.RAJAGOPAL_2016_FOOT_M["subtalar_from_ankle"]) * foot_scale
    sole = 0.0
    p["HEEL_BACK"] = np.array([heel_x, sole, hip_w])
    # metatarsophalangeal joint at 72 % of foot length from the heel, 1 % of H above the
    # sole (modelling choice; Rajagopal2016: 69 %)
    p["MTP"] = np.array([heel_x + 0.72 * Lf, 0.010 * H, hip_w])
    p["TTIP"] = np.array([heel_x + Lf, 0.008 * H, hip_w - 0.25 * foot_b])

    # Trunk: lumbar joint at the omphalion level (top of de Leva's lower trunk), behind
    # the hip joint centres as in Rajagopal2016; suprasternale at the top of the whole
    # trunk; shoulder joint centres at MIDS (de Leva's MIDS-MIDH trunk length), Rajagopal's
    # shoulder breadth; cervicale (neck/head joint) one de Leva head length below the
    # vertex, so the model is exactly H tall.
    p["LJC"] = np.array([-raj["lumbar_behind_hip"] * raj_scale,
                         hip_y + L["lower_trunk"], 0.0])
    p["OMPH"] = np.array([0.0, hip_y + L["lower_trunk"], 0.0])
    p["XYPH"] = p["OMPH"] + [0.0, L["mid_trunk"], 0.0]
    p["SUPR"] = p["XYPH"] + [0.0, L["upper_trunk"], 0.0]
    p["SJC"] = np.array([0.0, hip_y + L["trunk_mids"], sh_w])
    p["VERT"] = np.array([0.0, H, 0.0])
    p["CERV"] = np.array([0.0, H - L["head"], 0.0])

    # Upper limb hanging along the body, palms forward (anatomical position).
    p["EJC"] = p["SJC"] - [0.0, L["upper_arm"], 0.0]
    p["WJC"] = p["EJC"] - [0.0, L["forearm"], 0.0]
    p["MET3"] = p["WJC"] - [0.0, L["hand"], 0.0]

    # ---- inertial parameters (de Leva 1996 Table 4) ----
    segs = lay.segments

    def along(top: np.ndarray, direction: np.ndarray, length: float, cm_pct: float):
        return top + direction * length * cm_pct / 100

    down = np.array([0.0, -1.0, 0.0])
    for name, seg, top in (("pelvis", "lower_trunk", p["OMPH"]),
                           ("upper_trunk", "upper_trunk", p["SUPR"]),
                           ("mid_trunk", "mid_trunk", p["XYPH"]),
                           ("head", "head", p["VERT"]),
                           ("femur", "thigh", p["HJC"]), ("tibia", "shank", p["KJC"]),
                           ("humerus", "upper_arm", p["SJC"]),
                           ("forearm", "forearm", p["EJC"]), ("hand", "hand", p["WJC"])):
        r = row(seg)
        m = mf[seg] * mass
        com = along(top, down, L[seg], r.cm_pct)
        if seg in ("lower_trunk", "upper_trunk", "mid_trunk", "head"):
            com = np.array([0.0, com[1], 0.0])
        segs[name] = _Segment(m, com, _principal(m, L[seg], r))
    segs["torso"] = _combine([segs.pop("upper_trunk"), segs.pop("mid_trunk")])
    fa = segs.pop("forearm")
    # Rajagopal2016 splits the forearm's mass equally between ulna and radius
    segs["ulna"] = _Segment(fa.mass / 2, fa.com, fa.inertia / 2)
    segs["radius"] = _Segment(fa.mass / 2, fa.com.copy(), fa.inertia / 2)

    r = row("foot")
    m_foot = mf["foot"] * mass
    foot_com = np.array([heel_x + r.cm_pct / 100 * Lf, 0.5 * ankle_h, hip_w])
    foot_inertia = _principal(m_foot, Lf, r, long_axis="x")
    m_talus = _FOOT_SPLIT["talus"] * m_foot
    m_toes = _FOOT_SPLIT["toes"] * m_foot
    m_calcn = m_foot - m_talus - m_toes
    toes_com = np.array([0.5 * (p["MTP"][0] + p["TTIP"][0]), p["MTP"][1], hip_w])
    calcn_com = (m_foot * foot_com - m_talus * p["AJC"] - m_toes * toes_com) / m_calcn
    for name, m, c in (("talus", m_talus, p["AJC"]), ("calcn", m_calcn, calcn_com),
                       ("toes", m_toes, toes_com)):
        segs[name] = _Segment(m, c, foot_inertia * m / m_foot)
    return lay


# ---------------------------------------------------------------------------------------
# OpenSim construction helpers

def _vec3(v) -> osim.Vec3:
    return osim.Vec3(float(v[0]), float(v[1]), float(v[2]))


def _euler_xyz(R: np.ndarray) -> np.ndarray:
    """Body-fixed X-Y-Z Euler angles (OpenSim's frame ``orientation``) of a rotation matrix."""
    b = math.asin(max(-1.0, min(1.0, R[0, 2])))
    a = math.atan2(-R[1, 2], R[2, 2])
    c = math.atan2(-R[0, 1], R[0, 0])
    return np.array([a, b, c])


def _frame_with_z(axis: np.ndarray) -> np.ndarray:
    z = axis / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.column_stack([x, y, z])


def _frame_with_xy(x_axis: np.ndarray, y_axis: np.ndarray) -> np.ndarray:
    x = x_axis / np.linalg.norm(x_axis)
    y = y_axis - x * (y_axis @ x)
    y /= np.linalg.norm(y)
    return np.column_stack([x, y, np.cross(x, y)])


def _set_coordinate(coord: osim.Coordinate, name: str, default: float = 0.0) -> None:
    if coord.getName() != name:
        coord.setName(name)
    lo, hi = coordinate_range(name)
    coord.setRangeMin(lo)
    coord.setRangeMax(hi)
    coord.setDefaultValue(default)
    # Not clamped (Rajagopal2016 clamps): with clamped coordinates OpenSim's IK assembler
    # switches to a bounded optimiser that stops short of the optimum (measured: up to 8 deg
    # error on pro_sup/mtp/wrist with exact synthetic markers, against 0.001 deg unclamped).
    # The ranges stay in the model; ``run_ik(joint_limits=True)`` (kinevid run's default for
    # video keypoints) enforces them.
    coord.setDefaultClamped(False)
    coord.setDefaultLocked(False)


def _spatial_transform(rotations: list[tuple[str, np.ndarray]],
                       translations: list[str] | None = None) -> osim.SpatialTransform:
    # set_function (a copy) rather than setFunction: the latter adopts the Python-owned
    # function object and crashes when Python frees it
    st = osim.SpatialTransform()
    for i, (cname, axis) in enumerate(rotations):
        ta = st.updTransformAxis(i)
        ta.append_coordinates(cname)
        ta.setAxis(_vec3(axis))
        ta.set_function(osim.LinearFunction(1.0, 0.0))
    for i, axis in enumerate(np.eye(3)):
        ta = st.updTransformAxis(3 + i)
        ta.setAxis(_vec3(axis))
        if translations:
            ta.append_coordinates(translations[i])
            ta.set_function(osim.LinearFunction(1.0, 0.0))
        else:
            ta.set_function(osim.Constant(0.0))
    return st


class _Builder:
    def __init__(self, lay: _Layout, name: str):
        self.lay = lay
        self.model = osim.Model()
        self.model.setName(name)
        self.model.setGravity(osim.Vec3(0, -9.80665, 0))
        self.origin: dict[str, np.ndarray] = {"ground": np.zeros(3)}
        self.bodies: dict[str, osim.Body] = {}

    def body(self, name: str, seg: _Segment, origin: np.ndarray) -> osim.Body:
        com = seg.com - origin
        b = osim.Body(name, float(seg.mass), _vec3(com),
                      osim.Inertia(float(seg.inertia[0]), float(seg.inertia[1]),
                                   float(seg.inertia[2]), 0.0, 0.0, 0.0))
        self.model.addBody(b)
        self.bodies[name] = b
        self.origin[name] = np.asarray(origin, dtype=float)
        return b

    def frame(self, name: str) -> osim.PhysicalFrame:
        return self.model.getGround() if name == "ground" else self.bodies[name]

    def _offsets(self, parent: str, child: str, at: np.ndarray | None):
        if at is None:   # joint frames on both origins (the free ground-pelvis joint)
            return np.zeros(3), np.zeros(3)
        return (at - self.origin[parent]), (at - self.origin[child])

    def custom(self, name, parent, child, at, rotations, translations=None):
        lp, lc = self._offsets(parent, child, at)
        st = _spatial_transform(rotations, translations)
        j = osim.CustomJoint(name, self.frame(parent), _vec3(lp), osim.Vec3(0),
                             self.frame(child), _vec3(lc), osim.Vec3(0), st)
        # CustomJoint makes its coordinates when the model finalizes; ranges and defaults
        # are set then, in build_model
        self.model.addJoint(j)
        return j

    def pin(self, name, parent, child, at, axis, coord):
        lp, lc = self._offsets(parent, child, at)
        orient = _vec3(_euler_xyz(_frame_with_z(axis)))
        j = osim.PinJoint(name, self.frame(parent), _vec3(lp), orient,
                          self.frame(child), _vec3(lc), orient)
        self.model.addJoint(j)
        _set_coordinate(j.upd_coordinates(0), coord)
        return j

    def universal(self, name, parent, child, at, x_axis, y_axis, coords):
        lp, lc = self._offsets(parent, child, at)
        orient = _vec3(_euler_xyz(_frame_with_xy(x_axis, y_axis)))
        j = osim.UniversalJoint(name, self.frame(parent), _vec3(lp), orient,
                                self.frame(child), _vec3(lc), orient)
        self.model.addJoint(j)
        for i, c in enumerate(coords):
            _set_coordinate(j.upd_coordinates(i), c)
        return j

    def weld(self, name, parent, child, at):
        lp, lc = self._offsets(parent, child, at)
        j = osim.WeldJoint(name, self.frame(parent), _vec3(lp), osim.Vec3(0),
                           self.frame(child), _vec3(lc), osim.Vec3(0))
        self.model.addJoint(j)
        return j

    def geometry(self, body: str, tag: str, geom: osim.Geometry, centre_in_ground,
                 color=(0.85, 0.75, 0.65)) -> None:
        b = self.bodies[body]
        f = osim.PhysicalOffsetFrame(f"{body}_{tag}_frame", b,
                                     osim.Transform(_vec3(np.asarray(centre_in_ground)
                                                          - self.origin[body])))
        b.addComponent(f)
        geom.setColor(_vec3(color))
        f.attachGeometry(geom)

    def marker(self, name: str, body: str, at_ground) -> None:
        loc = np.asarray(at_ground, dtype=float) - self.origin[body]
        self.model.addMarker(osim.Marker(name, self.bodies[body], _vec3(loc)))


def _limb_radius(mass: float, length: float) -> float:
    # radius of a uniform cylinder with the segment's mass and length
    return math.sqrt(mass / (_TISSUE_DENSITY * math.pi * length))


def _validate(height, mass, sex) -> str:
    try:
        height = float(height)
        mass = float(mass)
    except (TypeError, ValueError):
        raise InputError(f"height and mass must be numbers, got {height!r} and {mass!r}") from None
    if not (0.5 <= height <= 2.6):
        raise InputError(f"height must be in metres between 0.5 and 2.6, got {height}")
    if not (5.0 <= mass <= 400.0):
        raise InputError(f"mass must be in kilograms between 5 and 400, got {mass}")
    s = str(sex).strip().lower()
    if s not in ("m", "f"):
        raise InputError(f"sex must be 'm' or 'f', got {sex!r}")
    return s


def build_model(height: float = 1.75, mass: float = 70.0, sex: str = "m",
                name: str = "kinevid_fullbody") -> osim.Model:
    """Build the full-body model for a subject; returns a finalized model (initSystem works)."""
    sex = _validate(height, mass, sex)
    height, mass = float(height), float(mass)
    lay = _layout(height, mass, sex)
    p, S = lay.p, lay.segments
    bld = _Builder(lay, name)
    axes = anth.RAJAGOPAL_2016_AXES_R
    ex, ey, ez = np.eye(3)
    bone = (0.89, 0.85, 0.79)

    # ---- pelvis and trunk ----
    bld.body("pelvis", S["pelvis"], p["MIDH"])
    bld.custom("ground_pelvis", "ground", "pelvis", None,
               [("pelvis_tilt", ez), ("pelvis_list", ex), ("pelvis_rotation", ey)],
               ["pelvis_tx", "pelvis_ty", "pelvis_tz"])
    # the pelvis origin is at the mid-hip point; ground_pelvis joint frames sit at both
    # origins, so pelvis_ty is the mid-hip height above the floor when standing
    bld.body("torso", S["torso"], p["LJC"])
    bld.custom("back", "pelvis", "torso", p["LJC"],
               [("lumbar_extension", ez), ("lumbar_bending", ex), ("lumbar_rotation", ey)])
    bld.body("head", S["head"], p["CERV"])
    bld.weld("neck", "torso", "head", p["CERV"])

    for side in SIDES:
        P = lambda key: _side_point(p[key], side)  # noqa: E731
        A = lambda key: _side_axis(axes[key], side)  # noqa: E731
        sign = 1.0 if side == "r" else -1.0
        hip_axes = [ez, sign * ex, sign * ey]   # Rajagopal: left add/rot axes negated
        bld.body(f"femur_{side}", _side_seg(S["femur"], side), P("HJC"))
        bld.custom(f"hip_{side}", "pelvis", f"femur_{side}", P("HJC"),
                   [(f"hip_flexion_{side}", hip_axes[0]),
                    (f"hip_adduction_{side}", hip_axes[1]),
                    (f"hip_rotation_{side}", hip_axes[2])])
        bld.body(f"tibia_{side}", _side_seg(S["tibia"], side), P("KJC"))
        # knee flexion positive, as Rajagopal's walker_knee (axis along -z on both sides)
        bld.pin(f"knee_{side}", f"femur_{side}", f"tibia_{side}", P("KJC"),
                _side_axis(-ez, side), f"knee_angle_{side}")
        bld.body(f"talus_{side}", _side_seg(S["talus"], side), P("AJC"))
        bld.pin(f"ankle_{side}", f"tibia_{side}", f"talus_{side}", P("AJC"),
                A("ankle"), f"ankle_angle_{side}")
        bld.body(f"calcn_{side}", _side_seg(S["calcn"], side), P("STJ"))
        bld.pin(f"subtalar_{side}", f"talus_{side}", f"calcn_{side}", P("STJ"),
                A("subtalar"), f"subtalar_angle_{side}")
        bld.body(f"toes_{side}", _side_seg(S["toes"], side), P("MTP"))
        bld.pin(f"mtp_{side}", f"calcn_{side}", f"toes_{side}", P("MTP"),
                A("mtp"), f"mtp_angle_{side}")

        bld.body(f"humerus_{side}", _side_seg(S["humerus"], side), P("SJC"))
        bld.custom(f"acromial_{side}", "torso", f"humerus_{side}", P("SJC"),
                   [(f"arm_flex_{side}", ez), (f"arm_add_{side}", sign * ex),
                    (f"arm_rot_{side}", sign * ey)])
        bld.body(f"ulna_{side}", _side_seg(S["ulna"], side), P("EJC"))
        bld.pin(f"elbow_{side}", f"humerus_{side}", f"ulna_{side}", P("EJC"),
                A("elbow"), f"elbow_flex_{side}")
        bld.body(f"radius_{side}", _side_seg(S["radius"], side), P("EJC"))
        # pronation-supination about the forearm's long axis (EJC-WJC), Rajagopal's sign
        bld.pin(f"radioulnar_{side}", f"ulna_{side}", f"radius_{side}", P("EJC"),
                _side_axis(ey, side), f"pro_sup_{side}")
        bld.body(f"hand_{side}", _side_seg(S["hand"], side), P("WJC"))
        bld.universal(f"radius_hand_{side}", f"radius_{side}", f"hand_{side}", P("WJC"),
                      A("wrist_flex"), A("wrist_dev"),
                      [f"wrist_flex_{side}", f"wrist_dev_{side}"])

    _add_geometry(bld, lay, bone)
    _add_markers(bld, lay)
    try:
        bld.model.finalizeFromProperties()
        cs = bld.model.updCoordinateSet()
        for i in range(cs.getSize()):
            c = cs.get(i)
            # the pelvis origin is the mid-hip point and the ground_pelvis joint frames sit
            # on both origins, so standing pelvis_ty is the mid-hip height above the floor
            _set_coordinate(c, c.getName(),
                            float(p["MIDH"][1]) if c.getName() == "pelvis_ty" else 0.0)
        bld.model.finalizeConnections()
        bld.model.initSystem()
    except RuntimeError as exc:  # an OpenSim exception here is a bug in this module
        raise ModelError(f"built-in model failed to initialise: {exc}") from exc
    return bld.model


def _side_seg(seg: _Segment, side: str) -> _Segment:
    return seg if side == "r" else _Segment(seg.mass, _mirror_point(seg.com), seg.inertia)


def _add_geometry(bld: _Builder, lay: _Layout, bone) -> None:
    p, L, S, H = lay.p, lay.lengths, lay.segments, lay.height
    hip_w = p["HJC"][2]
    sh_w = p["SJC"][2]
    # trunk: ellipsoids spanning de Leva's trunk segments, breadths from the joint centres
    pel_top = p["OMPH"][1]
    bld.geometry("pelvis", "body", osim.Ellipsoid(0.09 * H * 0.6, 0.5 * L["lower_trunk"] + 0.02 * H,
                                                  1.45 * hip_w),
                 [0.0, 0.5 * (pel_top + p["MIDH"][1]), 0.0], bone)
    torso_h = p["SUPR"][1] - pel_top
    bld.geometry("torso", "body", osim.Ellipsoid(0.065 * H, 0.5 * torso_h, 0.85 * sh_w),
                 [0.0, pel_top + 0.5 * torso_h, 0.0], bone)
    neck_len = p["CERV"][1] - p["SUPR"][1]
    if neck_len > 0:
        bld.geometry("torso", "neck", osim.Cylinder(0.03 * H, 0.5 * neck_len + 0.01 * H),
                     [0.0, p["SUPR"][1] + 0.5 * neck_len, 0.0], bone)
    head_c = np.array([0.012 * H, H - 0.5 * 0.130 * H, 0.0])   # Winter: head 0.130 H tall
    bld.geometry("head", "skull", osim.Ellipsoid(0.058 * H, 0.065 * H, 0.045 * H), head_c, bone)
    for side in SIDES:
        P = lambda key: _side_point(p[key], side)  # noqa: E731
        for body, seg, top, bottom in (("femur", "thigh", "HJC", "KJC"),
                                       ("tibia", "shank", "KJC", "AJC"),
                                       ("humerus", "upper_arm", "SJC", "EJC"),
                                       ("radius", "forearm", "EJC", "WJC")):
            m = S[body].mass * (2 if body == "radius" else 1)
            r = _limb_radius(m, L[seg])
            mid = 0.5 * (P(top) + P(bottom))
            bld.geometry(f"{body}_{side}", "shaft", osim.Cylinder(r, 0.5 * L[seg]), mid, bone)
        for body, key, scale in (("femur", "HJC", 0.045), ("tibia", "KJC", 0.03),
                                 ("humerus", "SJC", 0.028), ("ulna", "EJC", 0.02)):
            bld.geometry(f"{body}_{side}", "joint", osim.Sphere(scale * H * 0.5), P(key), bone)
        hand_c = P("WJC") - [0.0, 0.6 * L["hand"], 0.0]
        bld.geometry(f"hand_{side}", "palm",
                     osim.Ellipsoid(0.012 * H, 0.6 * L["hand"], 0.025 * H), hand_c, bone)
        bld.geometry(f"talus_{side}", "talus", osim.Sphere(0.25 * L["ankle_height"]),
                     P("AJC"), bone)
        fb = L["foot_breadth"]
        heel_x, mtp = p["HEEL_BACK"][0], P("MTP")
        rear_len = mtp[0] - heel_x
        bld.geometry(f"calcn_{side}", "foot",
                     osim.Brick(osim.Vec3(0.5 * rear_len, 0.35 * L["ankle_height"], 0.45 * fb)),
                     [heel_x + 0.5 * rear_len, 0.35 * L["ankle_height"], mtp[2]], bone)
        toe_len = p["TTIP"][0] - mtp[0]
        bld.geometry(f"toes_{side}", "toes",
                     osim.Brick(osim.Vec3(0.5 * toe_len, 0.5 * mtp[1], 0.45 * fb)),
                     [mtp[0] + 0.5 * toe_len, 0.5 * mtp[1], mtp[2]], bone)


def _add_markers(bld: _Builder, lay: _Layout) -> None:
    """Markers on the bodies, placed from the segment geometry.

    Joint-centre keypoints sit exactly on the joint centres. Craniofacial points use
    Winter's eye height and typical adult proportions (modelling choices, as fractions of
    H: interpupillary distance 0.036 H, bitragion breadth 0.083 H, tragion 0.012 H below
    the eyes on the plumb line through the shoulder and hip, eyes 0.046 H and nose tip
    0.062 H in front of it).
    """
    p, L, H = lay.p, lay.lengths, lay.height
    eye_y = anth.WINTER_2009_FIG_4_1["eye_height"] * H
    chin_y = anth.WINTER_2009_FIG_4_1["chin_height"] * H
    m = bld.marker
    m("Nose", "head", [0.062 * H, 0.5 * (eye_y + chin_y) + 0.004 * H, 0.0])
    m("Head", "head", [0.0, H, 0.0])
    m("Neck", "torso", [0.0, p["CERV"][1], 0.0])
    m("Hip", "pelvis", p["MIDH"])
    fb = L["foot_breadth"]
    mtp_axis = _side_axis(anth.RAJAGOPAL_2016_AXES_R["mtp"], "r")
    # pelvis: ASIS from the hip joint centre by Bell et al. (1990) ratios of the inter-ASIS
    # distance (HJC 14 % of it medial of the ASIS -> inter-ASIS = 2 * hip_w / 0.72);
    # PSIS 0.65 inter-ASIS behind the ASIS and 0.4 of it apart (modelling choice)
    hip_w = p["HJC"][2]
    pw = 2 * hip_w / (1 - 2 * anth.BELL_1990_HJC_FROM_ASIS["medial"])
    asis = p["HJC"] + [anth.BELL_1990_HJC_FROM_ASIS["posterior"] * pw,
                       anth.BELL_1990_HJC_FROM_ASIS["distal"] * pw,
                       anth.BELL_1990_HJC_FROM_ASIS["medial"] * pw]
    psis = np.array([asis[0] - 0.65 * pw, asis[1] + 0.02 * H, 0.2 * pw])
    knee_half = 0.028 * H        # femoral bi-epicondylar breadth ~0.056 H (modelling choice)
    elbow_half = 0.020 * H       # humeral bi-epicondylar breadth ~0.040 H
    wrist_half = 0.017 * H       # bi-styloid breadth ~0.034 H
    hand_half = 0.025 * H        # hand breadth at the MCPs ~0.05 H
    for side in SIDES:
        S = side.upper()
        P = lambda v: _side_point(v, side)  # noqa: E731
        m(f"{S}Eye", "head", P([0.046 * H, eye_y, 0.018 * H]))
        m(f"{S}Ear", "head", P([0.0, eye_y - 0.012 * H, 0.0415 * H]))
        m(f"{S}Shoulder", "torso", P(p["SJC"]))
        m(f"{S}Elbow", f"humerus_{side}", P(p["EJC"]))
        m(f"{S}Wrist", f"radius_{side}", P(p["WJC"]))
        # palm forward: the index (2nd MCP) is lateral (+z on the right), the pinky medial
        m(f"{S}Index", f"hand_{side}", P(p["MET3"] + [0.0, 0.03 * L["hand"], 0.5 * hand_half]))
        m(f"{S}Pinky", f"hand_{side}", P(p["MET3"] + [0.0, 0.12 * L["hand"], -hand_half]))
        m(f"{S}Hip", "pelvis", P(p["HJC"]))
        m(f"{S}Knee", f"femur_{side}", P(p["KJC"]))
        m(f"{S}Ankle", f"tibia_{side}", P(p["AJC"]))
        m(f"{S}Heel", f"calcn_{side}", P([p["HEEL_BACK"][0], 0.012 * H, p["HJC"][2]]))
        m(f"{S}BigToe", f"toes_{side}", P(p["TTIP"]))
        m(f"{S}SmallToe", f"toes_{side}",
          P([p["HEEL_BACK"][0] + 0.84 * L["foot"], 0.008 * H, p["HJC"][2] + 0.35 * fb]))
        m(f"{S}ASIS", "pelvis", P(asis))
        m(f"{S}PSIS", "pelvis", P(psis))
        m(f"{S}KneeLat", f"femur_{side}", P(p["KJC"] + [0.0, 0.0, knee_half]))
        m(f"{S}KneeMed", f"femur_{side}", P(p["KJC"] - [0.0, 0.0, knee_half]))
        # 1st and 5th metatarsal heads on Rajagopal's oblique mtp axis, on the calcn body
        t1 = 0.40 * fb / abs(mtp_axis[2])
        t5 = 0.45 * fb / abs(mtp_axis[2])
        m(f"{S}MT1", f"calcn_{side}", P(p["MTP"] + t1 * mtp_axis + [0.0, 0.004 * H, 0.0]))
        m(f"{S}MT5", f"calcn_{side}", P(p["MTP"] - t5 * mtp_axis + [0.0, 0.004 * H, 0.0]))
        m(f"{S}ElbowLat", f"humerus_{side}", P(p["EJC"] + [0.0, 0.0, elbow_half]))
        m(f"{S}ElbowMed", f"humerus_{side}", P(p["EJC"] - [0.0, 0.0, 1.2 * elbow_half]))
        m(f"{S}RadStyl", f"radius_{side}", P(p["WJC"] + [0.0, 0.0, wrist_half]))
        m(f"{S}UlnStyl", f"ulna_{side}", P(p["WJC"] - [0.0, 0.0, wrist_half]))


# ---------------------------------------------------------------------------------------
# I/O and forward kinematics

def save_model(model: osim.Model, path: str | os.PathLike) -> Path:
    """Write ``model`` as .osim, atomically."""
    path = Path(path)
    if path.suffix.lower() != ".osim":
        raise InputError("model file name must end in .osim", path)
    with atomic_path(path) as tmp:
        if not model.printToXML(str(tmp)):
            raise ModelError("OpenSim could not write the model", path)
    return path


def write_builtin_model(path: str | os.PathLike, height: float = 1.75, mass: float = 70.0,
                        sex: str = "m") -> Path:
    """Build the built-in model for a subject and save it to ``path``."""
    return save_model(build_model(height, mass, sex), path)


def _load(model_or_path) -> osim.Model:
    if isinstance(model_or_path, osim.Model):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise InputError("model file not found", path)
    try:
        return osim.Model(str(path))
    except RuntimeError as exc:
        raise ModelError(f"OpenSim cannot read the model: {exc}", path) from exc


def marker_positions(model_or_path, coordinates: dict[str, float]) -> dict[str, np.ndarray]:
    """Forward kinematics: each marker's position in ground for the given coordinate values.

    Coordinates not named keep their default values; values are in the model's units
    (radians, metres). Works on any OpenSim model (a path or a Model object, whose system
    is re-initialised here); locked coordinates are set regardless of the lock.
    """
    model = _load(model_or_path)
    state = model.initSystem()
    cs = model.getCoordinateSet()
    for name, value in coordinates.items():
        if not cs.contains(name):
            raise InputError(f"the model has no coordinate named {name!r}")
        coord = cs.get(name)
        coord.setLocked(state, False)   # a locked coordinate ignores setValue
        coord.setValue(state, float(value), False)
    model.realizePosition(state)
    markers = model.getMarkerSet()
    return {markers.get(i).getName(): markers.get(i).getLocationInGround(state).to_numpy().copy()
            for i in range(markers.getSize())}
