"""Published anthropometric tables behind kinevid's built-in full-body model, kept as plain data.

Sources (every number below names its table; nothing here is fitted or invented unless a
comment says "modelling choice"):

[deLeva1996]  de Leva P. (1996) Adjustments to Zatsiorsky-Seluyanov's segment inertia
              parameters. Journal of Biomechanics 29(9):1223-1230.
              Table 4: "Adjusted mean relative segment lengths, masses, CM positions and
              radii of gyration", female and male columns. Lengths are the mean lengths (mm)
              of the reference samples, whose mean stature is 1735 mm (female, 61.9 kg) and
              1741 mm (male, 73.0 kg); mass is % of body mass; CM position is % of segment
              length from the first ("origin") endpoint; radii of gyration are % of segment
              length about the sagittal, transverse and longitudinal axes through the CM.
              The upper half of Table 4 holds the primary segment definitions, the lower half
              alternative endpoints (head VERT-CERV, shank KJC-AJC, trunk MIDS-MIDH, ...).
[Winter2009]  Winter D.A. (2009) Biomechanics and Motor Control of Human Movement, 4th ed.,
              Wiley. Figure 4.1: segment lengths and landmark heights as fractions of body
              height H, after Drillis R. & Contini R. (1966) Body segment parameters,
              Technical Report 1166.03, New York University.
[Rajagopal2016] Rajagopal A., Dembia C.L., DeMers M.S., Delp D.D., Hicks J.L., Delp S.L.
              (2016) Full-body musculoskeletal model for muscle-driven simulation of human
              gait. IEEE Trans Biomed Eng 63(10):2068-2079; the model file Rajagopal2016.osim
              from opensim-org/opensim-models (a generic 1.70 m adult male). Used for what
              the tables do not give: joint-centre breadths, the oblique joint axes (ankle,
              subtalar, mtp, elbow, forearm) and coordinate ranges, so that kinevid's
              coordinates mean exactly what Rajagopal's mean.
[Bell1990]    Bell A.L., Pedersen D.R., Brand R.A. (1990) A comparison of the accuracy of
              several hip center location prediction methods. J Biomech 23(6):617-621: hip
              joint centre relative to the ASIS as fractions of the inter-ASIS distance.

Axis naming in de Leva's Table 4: the "sagittal" radius is about the sagittal
(antero-posterior) axis, the "transverse" radius about the transverse (medio-lateral) axis,
"longitudinal" about the segment's long axis.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeLevaSegment:
    """One row of de Leva (1996) Table 4 for one sex."""
    origin: str          # endpoint the CM position is measured from
    other: str           # other endpoint
    length_mm: float     # mean segment length of the reference sample
    mass_pct: float      # % of body mass
    cm_pct: float        # CM position, % of length from ``origin``
    r_sag_pct: float     # radius of gyration about the sagittal (AP) axis, % of length
    r_trans_pct: float   # ... about the transverse (ML) axis
    r_long_pct: float    # ... about the longitudinal axis


# de Leva (1996) Table 4, reference samples' stature (mm) and body mass (kg), per sex.
DE_LEVA_STATURE_MM = {"f": 1735.0, "m": 1741.0}
DE_LEVA_BODY_MASS_KG = {"f": 61.9, "m": 73.0}

# de Leva (1996) Table 4. Endpoint codes are de Leva's: VERT vertex, CERV C7 (cervicale),
# SUPR suprasternale, XYPH xiphion, OMPH omphalion, MIDH mid-point of the hip joint centres,
# MIDS mid-point of the shoulder joint centres, SJC/EJC/WJC/HJC/KJC/AJC joint centres,
# MET3 third metacarpale (3rd MCP joint), HEEL heel, TTIP tip of the longest toe.
DE_LEVA_1996_TABLE4: dict[str, dict[str, DeLevaSegment]] = {
    "f": {
        # upper half of Table 4
        "upper_trunk": DeLevaSegment("SUPR", "XYPH", 142.5, 15.45, 20.77, 74.6, 50.2, 71.8),
        "mid_trunk":   DeLevaSegment("XYPH", "OMPH", 205.3, 14.65, 45.12, 43.3, 35.4, 41.5),
        "lower_trunk": DeLevaSegment("OMPH", "MIDH", 181.5, 12.47, 49.20, 43.3, 40.2, 44.4),
        "trunk":       DeLevaSegment("SUPR", "MIDH", 529.3, 42.57, 41.51, 35.7, 33.9, 17.1),
        "upper_arm":   DeLevaSegment("SJC", "EJC", 275.1, 2.55, 57.54, 27.8, 26.0, 14.8),
        "forearm":     DeLevaSegment("EJC", "WJC", 264.3, 1.38, 45.59, 26.1, 25.7, 9.4),
        "hand":        DeLevaSegment("WJC", "MET3", 78.0, 0.56, 74.74, 53.1, 45.4, 33.5),
        "thigh":       DeLevaSegment("HJC", "KJC", 368.5, 14.78, 36.12, 36.9, 36.4, 16.2),
        "foot":        DeLevaSegment("HEEL", "TTIP", 228.3, 1.29, 40.14, 29.9, 27.9, 13.9),
        # lower half of Table 4 (alternative endpoints)
        # Female head r_long: two independent transcriptions of Table 4 read 26.1 and 26.3;
        # 26.1 (the value the male column also has) is used. The difference is 0.8 % of a
        # small moment of inertia.
        "head":        DeLevaSegment("VERT", "CERV", 243.7, 6.68, 48.41, 27.1, 29.5, 26.1),
        "trunk_mids":  DeLevaSegment("MIDS", "MIDH", 497.9, 42.57, 37.82, 37.9, 36.1, 18.2),
        "shank":       DeLevaSegment("KJC", "AJC", 438.6, 4.81, 43.52, 26.7, 26.3, 9.2),
    },
    "m": {
        # upper half of Table 4
        "upper_trunk": DeLevaSegment("SUPR", "XYPH", 170.7, 15.96, 29.99, 71.6, 45.4, 65.9),
        "mid_trunk":   DeLevaSegment("XYPH", "OMPH", 215.5, 16.33, 45.02, 48.2, 38.3, 46.8),
        "lower_trunk": DeLevaSegment("OMPH", "MIDH", 145.7, 11.17, 61.15, 61.5, 55.1, 58.7),
        "trunk":       DeLevaSegment("SUPR", "MIDH", 531.9, 43.46, 44.86, 37.2, 34.7, 19.1),
        "upper_arm":   DeLevaSegment("SJC", "EJC", 281.7, 2.71, 57.72, 28.5, 26.9, 15.8),
        "forearm":     DeLevaSegment("EJC", "WJC", 268.9, 1.62, 45.74, 27.6, 26.5, 12.1),
        "hand":        DeLevaSegment("WJC", "MET3", 86.2, 0.61, 79.00, 62.8, 51.3, 40.1),
        "thigh":       DeLevaSegment("HJC", "KJC", 422.2, 14.16, 40.95, 32.9, 32.9, 14.9),
        "foot":        DeLevaSegment("HEEL", "TTIP", 258.1, 1.37, 44.15, 25.7, 24.5, 12.4),
        # lower half of Table 4 (alternative endpoints)
        "head":        DeLevaSegment("VERT", "CERV", 242.9, 6.94, 50.02, 30.3, 31.5, 26.1),
        "trunk_mids":  DeLevaSegment("MIDS", "MIDH", 515.5, 43.46, 43.10, 38.4, 35.8, 19.7),
        "shank":       DeLevaSegment("KJC", "AJC", 440.3, 4.33, 43.95, 25.1, 24.6, 10.2),
    },
}

# Segments that make up the whole body in the model, with multiplicity (bilateral = 2).
# The trunk enters as its three parts (upper/mid/lower trunk), whose masses add up to the
# whole-trunk row, so that pelvis = lower trunk and torso = upper + mid trunk.
WHOLE_BODY_SEGMENTS = {"head": 1, "upper_trunk": 1, "mid_trunk": 1, "lower_trunk": 1,
                       "upper_arm": 2, "forearm": 2, "hand": 2, "thigh": 2, "shank": 2,
                       "foot": 2}

# Winter (2009) Figure 4.1 (after Drillis & Contini 1966): heights above the floor and
# breadths as fractions of body height H.
WINTER_2009_FIG_4_1 = {
    "eye_height": 0.936,
    "chin_height": 0.870,
    "shoulder_height": 0.818,
    "hip_height": 0.530,       # greater trochanter
    "knee_height": 0.285,
    "ankle_height": 0.039,     # lateral malleolus / ankle joint above the sole
    "foot_breadth": 0.055,
    "foot_length": 0.152,
    "shoulder_breadth": 0.259,
    "hip_breadth": 0.191,
}

# Rajagopal2016.osim generic model, read off the model file. The model represents a generic
# adult of about 1.70 m (its total mass is 75.3 kg); breadths are scaled by height / 1.70.
RAJAGOPAL_2016_HEIGHT_M = 1.70
RAJAGOPAL_2016_GEOMETRY_M = {
    "hip_jc_half_breadth": 0.07726,     # hip_r parent offset, z
    "shoulder_jc_half_breadth": 0.17,   # acromial_r parent offset, z
    # lumbar (back) joint relative to the hip joint centres, antero-posterior (x):
    # back at x=-0.1007, hips at x=-0.05628 in the pelvis frame.
    "lumbar_behind_hip": 0.1007 - 0.05628,
}

# Joint axes of Rajagopal2016 for the right side, as unit vectors in the (ground-aligned)
# parent body frame at the default pose, computed from the model's joint frame orientations
# (the Z axis of each PinJoint frame; the X and Y axes of the wrist UniversalJoint frame).
# Left-side axes are their mirror images as pseudo-vectors: (-x, -y, z).
RAJAGOPAL_2016_AXES_R = {
    "ankle": (-0.1050, -0.1740, 0.9791),
    "subtalar": (0.7872, 0.6047, -0.1209),
    "mtp": (0.5810, 0.0, -0.8139),
    "elbow": (0.2260, 0.0223, 0.9739),
    "radioulnar": (0.0564, 0.9984, 0.0020),
    "wrist_flex": (0.0, 0.0, 1.0),
    "wrist_dev": (1.0, 0.0, 0.0),
}

# Rajagopal2016.osim subtalar joint centre relative to the ankle joint centre
# (talus frame, metres, generic 1.70 m model) and the mtp joint relative to the subtalar
# joint (calcn frame). Scaled here by foot length (generic foot: heel-to-toe ~0.26 m).
RAJAGOPAL_2016_FOOT_M = {
    "subtalar_from_ankle": (-0.04877, -0.04195, 0.00792),
    "foot_length": 0.26,
}

# Bell, Pedersen & Brand (1990): hip joint centre from the ipsilateral ASIS as fractions of
# the inter-ASIS distance: 22 % posterior, 30 % distal, 14 % medial.
BELL_1990_HJC_FROM_ASIS = {"posterior": 0.22, "distal": 0.30, "medial": 0.14}


def segment_row(sex: str, segment: str) -> DeLevaSegment:
    return DE_LEVA_1996_TABLE4[sex][segment]


def length_fraction(sex: str, segment: str) -> float:
    """Segment length as a fraction of stature: de Leva's mean length / the sample's stature."""
    return DE_LEVA_1996_TABLE4[sex][segment].length_mm / DE_LEVA_STATURE_MM[sex]


def mass_fractions(sex: str) -> dict[str, float]:
    """Per-segment mass fractions renormalised so the whole body sums to exactly 1.

    de Leva's female column sums to 99.99 % (rounding in the published table); spreading
    that rounding proportionally keeps every ratio and makes the model's mass exact.
    """
    table = DE_LEVA_1996_TABLE4[sex]
    total = sum(table[s].mass_pct * n for s, n in WHOLE_BODY_SEGMENTS.items())
    return {s: table[s].mass_pct / total for s in WHOLE_BODY_SEGMENTS}
