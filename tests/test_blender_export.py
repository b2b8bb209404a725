"""kinevid export-blender: per-body world transforms for the Blender add-on (.kvb files).

The file is read back by ``read_kvb`` below, which uses only the standard library and numpy,
as Blender's Python will; expected values come from OpenSim directly (forward kinematics,
AnalyzeTool's BodyKinematics, the model's constraints) or from the input files.
"""
from __future__ import annotations

import base64
import io
import json
import math
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import opensim as osim
import pytest
from conftest import data_path

from opensim_bridge.errors import InputError, KinevidError, ModelError

GAIT = ("opensim-models", "Pipelines", "Gait2354_Simbody")
OPENCAP = ("nimblephysics", "data", "grf", "OpenCapUnfiltered")


# --------------------------------------------------------------------------- reference reader
def read_kvb(path) -> tuple[dict, dict, dict]:
    """(manifest, arrays, meshes) from a .kvb file, with zipfile + json + numpy only."""
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[0] == "manifest.json"
        manifest = json.loads(zf.read("manifest.json").decode("utf-8"))

        def load(member):
            return np.load(io.BytesIO(zf.read(member)), allow_pickle=False)

        arrays = {name: load(spec["file"]) for name, spec in manifest["arrays"].items()}
        meshes = {mid: (load(spec["vertices"]), load(spec["triangles"]))
                  for mid, spec in manifest["meshes"].items()}
    return manifest, arrays, meshes


def quat_to_matrix(q) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def read_mot(path) -> tuple[list[str], np.ndarray, bool]:
    """Labels, data (time first) and inDegrees of a .mot file, parsed here independently."""
    lines = Path(path).read_text().splitlines()
    end = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "endheader")
    degrees = any(ln.strip().lower() == "indegrees=yes" for ln in lines[:end])
    labels = lines[end + 1].split()
    data = np.array([ln.split() for ln in lines[end + 2:] if ln.strip()], dtype=float)
    return labels, data, degrees


def pose_with_opensim(model_path, labels, row, degrees, assemble=False):
    """An osim.Model and a state posed at one motion row, the plain OpenSim way."""
    model = osim.Model(str(model_path))
    state = model.initSystem()
    cs = model.getCoordinateSet()
    for label, value in zip(labels[1:], row[1:]):
        c = cs.get(label)
        if degrees and c.getMotionType() == osim.Coordinate.Rotational:
            value = math.radians(value)
        c.setValue(state, float(value), False)
    if assemble:
        model.assemble(state)
    model.realizePosition(state)
    return model, state


def vec(v) -> np.ndarray:
    return np.array([v.get(i) for i in range(3)])


def rot(r) -> np.ndarray:
    return np.array([[r.get(i, j) for j in range(3)] for i in range(3)])


# --------------------------------------------------------------------------- Gait2354
@pytest.fixture(scope="module")
def gait_export(tmp_path_factory):
    from opensim_bridge.blender_export import export_blender

    out = tmp_path_factory.mktemp("kvb") / "walk.kvb"
    result = export_blender(data_path(*GAIT, "OutputReference", "subject01_simbody.osim"),
                            data_path(*GAIT, "OutputReference", "subject01_walk1_ik.mot"), out,
                            markers=data_path(*GAIT, "subject01_walk1.trc"),
                            grf=data_path(*GAIT, "subject01_walk1_grf.mot"),
                            geometry_paths=[data_path("opensim-models", "Geometry")])
    return result, read_kvb(out)


def test_gait2354_bodies_frames_and_forward_kinematics(gait_export):
    result, (manifest, arrays, _) = gait_export
    model_path = data_path(*GAIT, "OutputReference", "subject01_simbody.osim")
    labels, mot, degrees = read_mot(data_path(*GAIT, "OutputReference", "subject01_walk1_ik.mot"))
    assert manifest["format"] == "kinevid-blender-motion" and manifest["version"] == 1
    ref = osim.Model(str(model_path))
    bodies = [b["name"] for b in manifest["bodies"]]
    assert sorted(bodies) == sorted(ref.getBodySet().get(i).getName()
                                    for i in range(ref.getBodySet().getSize()))
    assert len(bodies) == ref.getBodySet().getSize() == result.body_count
    assert manifest["frame_count"] == len(mot) == arrays["time"].shape[0]
    np.testing.assert_allclose(arrays["time"], mot[:, 0], atol=1e-12)
    assert manifest["fps"] == pytest.approx(60.0, rel=1e-4)
    F, B = len(mot), len(bodies)
    assert arrays["body_translation"].shape == (F, B, 3)
    assert arrays["body_rotation"].shape == (F, B, 4)
    # Parents come before children.
    seen = {"ground"}
    for b in manifest["bodies"]:
        assert b["parent"] in seen, b
        seen.add(b["name"])

    q = arrays["body_rotation"].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-6)
    assert (np.einsum("fbi,fbi->fb", q[1:], q[:-1]) >= 0).all()  # no hemisphere flips

    for f in (0, 37, F - 1):
        model, state = pose_with_opensim(model_path, labels, mot[f], degrees)
        for i, name in enumerate(bodies):
            xf = model.getBodySet().get(name).getTransformInGround(state)
            np.testing.assert_allclose(arrays["body_translation"][f, i], vec(xf.p()), atol=1e-6,
                                       err_msg=f"{name} frame {f}")
            np.testing.assert_allclose(quat_to_matrix(q[f, i]), rot(xf.R()), atol=2e-6,
                                       err_msg=f"{name} frame {f}")
        ms = model.getMarkerSet()
        for k, mk in enumerate(manifest["model_markers"]):
            np.testing.assert_allclose(arrays["model_markers"][f, k],
                                       vec(ms.get(mk["name"]).getLocationInGround(state)), atol=1e-6)
    # Joint angles: the motion's own values (degrees), every coordinate from the motion.
    names = [c["name"] for c in manifest["coordinates"]]
    for j, label in enumerate(labels[1:]):
        np.testing.assert_allclose(arrays["coordinates"][:, names.index(label)], mot[:, j + 1],
                                   atol=1e-4 * max(1.0, np.abs(mot[:, j + 1]).max()))
    assert all(c["from_motion"] for c in manifest["coordinates"])
    assert manifest["warnings"] == []


def test_gait2354_matches_opensim_body_kinematics(gait_export, tmp_path):
    """OpenSim's own AnalyzeTool (BodyKinematics) reports each body's centre of mass in ground;
    the exported origin + rotation * mass centre must land on it."""
    _, (manifest, arrays, _) = gait_export
    t = arrays["time"]
    tool = osim.AnalyzeTool()
    tool.setName("bk")
    tool.setModelFilename(str(data_path(*GAIT, "OutputReference", "subject01_simbody.osim")))
    tool.setCoordinatesFileName(str(data_path(*GAIT, "OutputReference", "subject01_walk1_ik.mot")))
    tool.setInitialTime(float(t[0]))
    tool.setFinalTime(float(t[-1]))
    tool.setResultsDir(str(tmp_path))
    tool.setLowpassCutoffFrequency(-1)
    bk = osim.BodyKinematics()
    bk.setInDegrees(True)
    tool.getAnalysisSet().cloneAndAppend(bk)
    setup = tmp_path / "analyze.xml"
    tool.printToXML(str(setup))
    assert osim.AnalyzeTool(str(setup)).run()  # from its setup file, as the GUI and CLI run it
    table = osim.TimeSeriesTable(str(tmp_path / "bk_BodyKinematics_pos_global.sto"))
    times = np.array(table.getIndependentColumn())
    for name in ("pelvis", "tibia_r", "toes_l", "torso"):
        i = [b["name"] for b in manifest["bodies"]].index(name)
        com = np.stack([table.getDependentColumn(f"{name}_{a}").to_numpy() for a in "XYZ"], axis=1)
        mc = np.array(manifest["bodies"][i]["mass_center"])
        for f in (5, 40, 70):
            k = int(np.argmin(np.abs(times - t[f])))
            assert abs(times[k] - t[f]) < 1e-6
            pred = arrays["body_translation"][f, i] + quat_to_matrix(arrays["body_rotation"][f, i]) @ mc
            np.testing.assert_allclose(pred, com[k], atol=2e-5, err_msg=f"{name} frame {f}")


def test_gait2354_meshes_markers_and_grf(gait_export):
    _, (manifest, arrays, meshes) = gait_export
    geometry_dir = data_path("opensim-models", "Geometry")
    entries = [g for b in manifest["bodies"] for g in b["geometry"]]
    mesh_entries = [g for g in entries if g["kind"] == "mesh"]
    assert mesh_entries
    for g in mesh_entries:
        src = geometry_dir / g["mesh_file"]
        assert src.is_file() and not g["missing"] and g["mesh"] in meshes, g
        v, t = meshes[g["mesh"]]
        head = re.search(r'NumberOfPoints="(\d+)"', src.read_text()[:2000])
        assert v.shape == (int(head.group(1)), 3) and v.dtype == np.float32
        assert t.ndim == 2 and t.shape[1] == 3 and len(t) > 0 and t.max() < len(v)
        assert len(g["scale"]) == 3 and len(g["rotation"]) == 4 and len(g["color"]) == 3
    # Scaled model: the femur mesh carries the scale factors the .osim gives it.
    osim_text = data_path(*GAIT, "OutputReference", "subject01_simbody.osim").read_text()
    femur = next(g for b in manifest["bodies"] if b["name"] == "femur_r" for g in b["geometry"])
    block = osim_text[osim_text.index("<mesh_file>femur_r.vtp</mesh_file>") - 1500:
                      osim_text.index("<mesh_file>femur_r.vtp</mesh_file>")]
    scale = re.findall(r"<scale_factors>([^<]+)</scale_factors>", block)[-1].split()
    np.testing.assert_allclose(femur["scale"], [float(s) for s in scale])

    # Experimental markers, against the TRC interpolated here (mm -> m).
    trc = np.loadtxt(data_path(*GAIT, "subject01_walk1.trc"), skiprows=6)
    names = manifest["experimental_markers"]
    assert arrays["experimental_markers"].shape == (manifest["frame_count"], len(names), 3)
    k = names.index("L.Heel")
    for f in (3, 50):
        expect = [np.interp(arrays["time"][f], trc[:, 1], trc[:, 2 + 3 * k + a]) / 1000 for a in range(3)]
        np.testing.assert_allclose(arrays["experimental_markers"][f, k], expect, atol=1e-6)

    # GRF: two plates, with sides and values from the file.
    labels, grf, _ = read_mot(data_path(*GAIT, "subject01_walk1_grf.mot"))
    assert arrays["grf_force"].shape == (manifest["frame_count"], len(manifest["grf"]), 3)
    for p, plate in enumerate(manifest["grf"]):
        assert plate["side"] in ("r", "l", None)
        col = labels.index(plate["force_columns"][1])
        expect = np.interp(arrays["time"], grf[:, 0], grf[:, col])
        np.testing.assert_allclose(arrays["grf_force"][:, p, 1], expect, atol=1e-3)
    assert arrays["grf_force"][..., 1].max() > 500  # a walking subject's vertical force


def test_missing_meshes_are_flagged_not_fatal(tmp_path, monkeypatch):
    from opensim_bridge.blender_export import export_blender

    monkeypatch.delenv("OPENSIM_GEOMETRY_PATH", raising=False)
    out = tmp_path / "m.kvb"
    result = export_blender(data_path(*GAIT, "OutputReference", "subject01_simbody.osim"),
                            data_path(*GAIT, "OutputReference", "subject01_walk1_ik.mot"), out)
    manifest, _, meshes = read_kvb(out)
    entries = [g for b in manifest["bodies"] for g in b["geometry"] if g["kind"] == "mesh"]
    assert entries and all(g["missing"] and g["mesh"] is None for g in entries)
    assert meshes == {} and result.missing_meshes
    assert any("not found" in w for w in manifest["warnings"])
    # The environment variable is searched too.
    monkeypatch.setenv("OPENSIM_GEOMETRY_PATH", str(data_path("opensim-models", "Geometry")))
    result = export_blender(data_path(*GAIT, "OutputReference", "subject01_simbody.osim"),
                            data_path(*GAIT, "OutputReference", "subject01_walk1_ik.mot"), out)
    assert result.missing_meshes == [] and result.mesh_count > 0


# --------------------------------------------------------------------------- coupled coordinates
def test_opencap_coupled_patella_matches_opensim_assembly(tmp_path):
    """OpenCap's model couples the patella (knee_angle_r_beta) to the knee; its IK motion lacks
    the dependent column. The export must pose it as OpenSim's assembler does."""
    from opensim_bridge.blender_export import export_blender

    model_path = data_path(*OPENCAP, "Models", "final.osim")
    motion = data_path(*OPENCAP, "IK", "walking2_ik.mot")
    out = tmp_path / "oc.kvb"
    export_blender(model_path, motion, out, geometry_paths=[data_path("opensim-models", "Geometry")])
    manifest, arrays, meshes = read_kvb(out)
    labels, mot, degrees = read_mot(motion)
    assert "knee_angle_r_beta" not in labels
    coords = {c["name"]: c for c in manifest["coordinates"]}
    assert coords["knee_angle_r_beta"]["dependent"] and not coords["knee_angle_r_beta"]["from_motion"]
    assert not any("knee_angle_r_beta" in w for w in manifest["warnings"])
    bodies = [b["name"] for b in manifest["bodies"]]
    assert "patella_r" in bodies and meshes
    names = [c["name"] for c in manifest["coordinates"]]
    for f in (10, 90):
        # OpenSim's assembler: it satisfies the coupler exactly but may nudge the knee angle
        # itself by up to ~1e-5 rad (it tracks the motion's values as soft goals).
        model, state = pose_with_opensim(model_path, labels, mot[f], degrees, assemble=True)
        for name in ("patella_r", "patella_l", "tibia_r", "calcn_l"):
            i = bodies.index(name)
            xf = model.getBodySet().get(name).getTransformInGround(state)
            np.testing.assert_allclose(arrays["body_translation"][f, i], vec(xf.p()), atol=5e-5)
            np.testing.assert_allclose(quat_to_matrix(arrays["body_rotation"][f, i]), rot(xf.R()),
                                       atol=5e-5)
        # The coupler's own equation, evaluated by OpenSim, with the motion's knee angle kept.
        model, state = pose_with_opensim(model_path, labels, mot[f], degrees)
        for side in "rl":
            ccc = osim.CoordinateCouplerConstraint.safeDownCast(
                model.getConstraintSet().get(f"patellofemoral_knee_angle_{side}_con"))
            knee = model.getCoordinateSet().get(f"knee_angle_{side}").getValue(state)
            beta = ccc.getFunction().calcValue(osim.Vector(1, knee))
            model.getCoordinateSet().get(f"knee_angle_{side}_beta").setValue(state, beta, False)
            assert arrays["coordinates"][f, names.index(f"knee_angle_{side}_beta")] == pytest.approx(beta, abs=1e-6)
        model.realizePosition(state)
        for name in ("patella_r", "patella_l"):
            i = bodies.index(name)
            xf = model.getBodySet().get(name).getTransformInGround(state)
            np.testing.assert_allclose(arrays["body_translation"][f, i], vec(xf.p()), atol=1e-6)
            np.testing.assert_allclose(quat_to_matrix(arrays["body_rotation"][f, i]), rot(xf.R()),
                                       atol=2e-6)
    # Independent coordinates are exactly the motion's (radians file -> degrees in the export).
    j = [c["name"] for c in manifest["coordinates"]].index("knee_angle_r")
    np.testing.assert_allclose(arrays["coordinates"][:, j], np.degrees(mot[:, labels.index("knee_angle_r")]),
                               atol=1e-4)


# --------------------------------------------------------------------------- built-in model
def test_builtin_model_exports_analytic_geometry(tmp_path):
    from opensim_bridge.blender_export import export_blender
    from opensim_bridge.builtin_model import COORDINATES, write_builtin_model
    from opensim_bridge.storage import Table, write_table

    model_path = write_builtin_model(tmp_path / "builtin.osim")
    t = np.linspace(0, 1, 31)
    cols = {"pelvis_ty": 0.95 + 0 * t, "knee_angle_r": 40 + 30 * np.sin(2 * np.pi * t),
            "hip_flexion_l": 20 * np.sin(2 * np.pi * t)}
    motion = write_table(Table(t, list(cols), np.stack(list(cols.values()), axis=1),
                               in_degrees=True, name="gen"), tmp_path / "gen.mot")
    out = tmp_path / "b.kvb"
    result = export_blender(model_path, motion, out)
    manifest, arrays, meshes = read_kvb(out)
    ref = osim.Model(str(model_path))
    assert len(manifest["bodies"]) == ref.getBodySet().getSize() == result.body_count
    assert arrays["body_translation"].shape[:2] == (31, ref.getBodySet().getSize())
    kinds = {g["kind"] for b in manifest["bodies"] for g in b["geometry"]}
    assert kinds and "mesh" not in kinds and meshes == {}
    for b in manifest["bodies"]:
        for g in b["geometry"]:
            dims = {"sphere": ["radius"], "ellipsoid": ["radii"], "cylinder": ["radius", "half_height"],
                    "brick": ["half_lengths"]}[g["kind"]]
            for d in dims:
                assert np.all(np.asarray(g[d]) > 0), g
    # Missing coordinates are listed in a warning, held at their defaults.
    missing = [c for c in COORDINATES if c not in cols]
    warning = next(w for w in manifest["warnings"] if "not in the motion" in w)
    assert all(c in warning for c in missing)
    # The knee angle drives the tibia relative to the femur: check against OpenSim.
    i_f, i_t = (manifest["bodies"].index(next(b for b in manifest["bodies"] if b["name"] == n))
                for n in ("femur_r", "tibia_r"))
    rel = quat_to_matrix(arrays["body_rotation"][7, i_f]).T @ quat_to_matrix(arrays["body_rotation"][7, i_t])
    state = ref.initSystem()
    ref.getCoordinateSet().get("knee_angle_r").setValue(state, math.radians(cols["knee_angle_r"][7]), False)
    ref.realizePosition(state)
    expect = rot(ref.getBodySet().get("femur_r").getTransformInGround(state).R()).T @ \
        rot(ref.getBodySet().get("tibia_r").getTransformInGround(state).R())
    np.testing.assert_allclose(rel, expect, atol=2e-6)


# --------------------------------------------------------------------------- quaternions
def test_rotation_to_quaternion_is_robust_near_half_turns():
    from opensim_bridge.blender_export import rotation_to_quaternion

    rng = np.random.default_rng(3)
    axes = rng.normal(size=(400, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, 200), np.pi - rng.uniform(0, 1e-7, 200)])
    mats = []
    for a, ang in zip(axes, angles):
        r = osim.Rotation()
        r.setRotationFromAngleAboutNonUnitVector(float(ang), osim.Vec3(*map(float, a)))
        mats.append(rot(r))
    mats = np.array(mats)
    q = rotation_to_quaternion(mats)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    for m, qq in zip(mats, q):
        np.testing.assert_allclose(quat_to_matrix(qq), m, atol=1e-12)


# --------------------------------------------------------------------------- mesh readers
def _vtp_arrays(path):
    """Points and (connectivity, offsets) of an ascii .vtp, parsed here with regexes."""
    text = Path(path).read_text()
    def block(tag, name=None):
        pat = (rf'<{tag}>\s*<DataArray[^>]*>(.*?)</DataArray>' if name is None else
               rf'<{tag}>.*?<DataArray[^>]*Name="{name}"[^>]*>(.*?)</DataArray>')
        return re.search(pat, text, re.DOTALL).group(1).split()
    pts = np.array(block("Points"), dtype=np.float32).reshape(-1, 3)
    conn = np.array(block("Polys", "connectivity"), dtype=np.int32)
    offs = np.array(block("Polys", "offsets"), dtype=np.int32)
    return pts, conn, offs


def _encode(arr: np.ndarray, compressed: bool, header: str) -> str:
    """A VTK base64 binary block, as VTK's XML writer lays it out."""
    raw = arr.tobytes()
    h = "<I" if header == "UInt32" else "<Q"
    if not compressed:
        return base64.b64encode(struct.pack(h, len(raw)) + raw).decode()
    blocksize = 1000
    chunks = [zlib.compress(raw[i:i + blocksize]) for i in range(0, len(raw), blocksize)]
    last = len(raw) - blocksize * (len(chunks) - 1)
    head = struct.pack(f"<{3 + len(chunks)}{h[1]}", len(chunks), blocksize, last,
                       *[len(c) for c in chunks])
    return base64.b64encode(head).decode() + base64.b64encode(b"".join(chunks)).decode()


def _binary_vtp(pts, conn, offs, compressed, header) -> str:
    comp = ' compressor="vtkZLibDataCompressor"' if compressed else ""
    three = ' NumberOfComponents="3"'
    def da(arr, vtype, name, ncomp=""):
        return (f'<DataArray type="{vtype}" Name="{name}"{ncomp} format="binary">'
                f"{_encode(arr, compressed, header)}</DataArray>")
    return (f'<?xml version="1.0"?>\n<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" '
            f'header_type="{header}"{comp}><PolyData><Piece NumberOfPoints="{len(pts)}" '
            f'NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" NumberOfPolys="{len(offs)}">'
            f'<Points>{da(pts, "Float32", "Points", three)}</Points>'
            f'<Polys>{da(conn.astype("<i8"), "Int64", "connectivity")}'
            f'{da(offs.astype("<i8"), "Int64", "offsets")}</Polys></Piece></PolyData></VTKFile>')


@pytest.mark.parametrize("compressed,header", [(False, "UInt32"), (True, "UInt32"), (True, "UInt64"),
                                               (False, "UInt64")])
def test_vtp_reader_real_file_ascii_and_binary(tmp_path, compressed, header):
    from opensim_bridge.geometry import read_vtp

    src = data_path("opensim-models", "Geometry", "femur_r.vtp")
    pts, conn, offs = _vtp_arrays(src)
    text = src.read_text()
    n_points = int(re.search(r'NumberOfPoints="(\d+)"', text).group(1))
    n_polys = int(re.search(r'NumberOfPolys="(\d+)"', text).group(1))
    sizes = np.diff(np.concatenate([[0], offs]))
    mesh = read_vtp(src)
    assert mesh.vertices.shape == (n_points, 3) == pts.shape and len(offs) == n_polys
    assert len(mesh.triangles) == int((sizes - 2).sum())
    np.testing.assert_array_equal(mesh.vertices, pts)
    # Every triangle's first vertex is its polygon's first vertex (fan, winding kept).
    starts = np.concatenate([[0], offs[:-1]])
    assert set(mesh.triangles[:, 0].tolist()) <= set(conn[starts].tolist())

    binary = tmp_path / "femur_bin.vtp"
    binary.write_text(_binary_vtp(pts, conn, offs, compressed, header))
    again = read_vtp(binary)
    np.testing.assert_array_equal(again.vertices, mesh.vertices)
    np.testing.assert_array_equal(again.triangles, mesh.triangles)


def test_triangle_strips_keep_winding():
    from opensim_bridge.geometry import triangulate_strips

    # A flat strip in the z = 0 plane, zig-zagging along x: every triangle must face +z.
    pts = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0], [2, 0, 0], [2, 1, 0]], float)
    tris = triangulate_strips([np.array([1, 0, 3, 2, 5, 4])])
    assert len(tris) == 4
    normals = np.cross(pts[tris[:, 1]] - pts[tris[:, 0]], pts[tris[:, 2]] - pts[tris[:, 0]])
    assert (np.sign(normals[:, 2]) == np.sign(normals[0, 2])).all()


def test_stl_and_obj_readers(tmp_path):
    from opensim_bridge.geometry import read_mesh

    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]
    (tmp_path / "t.obj").write_text("# tetra\n" + "".join(f"v {a} {b} {c}\n" for a, b, c in v)
                                    + "f 1 3 2\nf 1/1 2/2 4/4\nf -4 -1 -2\nf 2 3 4\n")
    stl = bytearray(80) + struct.pack("<I", 4)
    for f in faces:
        stl += struct.pack("<3f", 0, 0, 0) + v[list(f)].astype("<f4").tobytes() + b"\0\0"
    (tmp_path / "t.stl").write_bytes(bytes(stl))
    ascii_stl = "solid t\n" + "".join(
        "facet normal 0 0 0\nouter loop\n" + "".join(f"vertex {x} {y} {z}\n" for x, y, z in v[list(f)])
        + "endloop\nendfacet\n" for f in faces) + "endsolid t\n"
    (tmp_path / "a.stl").write_text(ascii_stl)
    for name in ("t.obj", "t.stl", "a.stl"):
        mesh = read_mesh(tmp_path / name)
        assert mesh.vertices.shape == (4, 3) and mesh.triangles.shape == (4, 3), name
        got = {tuple(sorted(map(tuple, mesh.vertices[t].tolist()))) for t in mesh.triangles}
        want = {tuple(sorted(map(tuple, v[list(f)].tolist()))) for f in faces}
        assert got == want, name


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_name_the_file_and_keep_earlier_output(tmp_path):
    from opensim_bridge.blender_export import export_blender
    from opensim_bridge.geometry import read_mesh
    from opensim_bridge.storage import read_table, write_table

    model = data_path(*GAIT, "OutputReference", "subject01_simbody.osim")
    motion = data_path(*GAIT, "OutputReference", "subject01_walk1_ik.mot")
    out = tmp_path / "keep.kvb"
    out.write_bytes(b"earlier result")

    with pytest.raises(ModelError, match="nope.osim"):
        export_blender(tmp_path / "nope.osim", motion, out)
    with pytest.raises(InputError, match="nope.mot"):
        export_blender(model, tmp_path / "nope.mot", out)
    with pytest.raises(InputError, match="geometry search folder not found"):
        export_blender(model, motion, out, geometry_paths=[tmp_path / "nodir"])
    with pytest.raises(InputError, match="video file not found"):
        export_blender(model, motion, out, video=tmp_path / "v.mp4")
    with pytest.raises(InputError, match="folder"):
        export_blender(model, motion, tmp_path)

    # A motion for another model: unknown columns are listed.
    table = read_table(motion)
    odd = table.copy(labels=tuple("wrist_flex_r" if lab == "ankle_angle_r" else
                                  ("elbow_flex_l" if lab == "lumbar_extension" else lab)
                                  for lab in table.labels))
    bad = write_table(odd, tmp_path / "odd.mot")
    with pytest.raises(InputError) as err:
        export_blender(model, bad, out)
    assert "wrist_flex_r" in str(err.value) and "elbow_flex_l" in str(err.value)
    assert "odd.mot" in str(err.value)
    assert out.read_bytes() == b"earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.kvb", "odd.mot"]
    # ...and can be ignored on request, with a warning.
    result = export_blender(model, bad, out, ignore_unknown_columns=True)
    assert any("wrist_flex_r" in w for w in result.warnings)
    assert any("ankle_angle_r" in w and "default" in w for w in result.warnings)

    broken = tmp_path / "broken.vtp"
    broken.write_text('<VTKFile type="PolyData"><PolyData><Piece NumberOfPoints="3" '
                      'NumberOfPolys="1"><Points><DataArray type="Float32" NumberOfComponents="3" '
                      'format="ascii">0 0 0 1 0 0</DataArray></Points></Piece></PolyData></VTKFile>')
    with pytest.raises(InputError, match="broken.vtp"):
        read_mesh(broken)
    (tmp_path / "x.ply").write_text("ply")
    with pytest.raises(InputError, match="unsupported mesh type"):
        read_mesh(tmp_path / "x.ply")


def test_cli_export_blender(tmp_path, capsys):
    import argparse

    from inference.commands.export_blender import add_export_blender_parser

    parser = argparse.ArgumentParser(prog="kinevid")
    add_export_blender_parser(parser.add_subparsers())
    out = tmp_path / "cli.kvb"
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0")  # only its path is stored
    from opensim_bridge.storage import Table, write_table
    conf = write_table(Table([0.0, 2.0], ["knee_angle_r"], [[1.0], [0.0]], name="c"),
                       tmp_path / "conf.sto")
    args = parser.parse_args(["export-blender", str(data_path(*GAIT, "OutputReference", "subject01_simbody.osim")),
                              str(data_path(*GAIT, "OutputReference", "subject01_walk1_ik.mot")),
                              "-o", str(out), "--video", str(video), "--video-offset", "0.25",
                              "--geometry-path", str(data_path("opensim-models", "Geometry")),
                              "--confidence", str(conf)])
    assert args.func(args) == 0
    manifest, arrays, meshes = read_kvb(out)
    names = [c["name"] for c in manifest["coordinates"]]
    confidence = arrays["coordinate_confidence"]
    assert confidence.shape == arrays["coordinates"].shape
    np.testing.assert_allclose(confidence[:, names.index("knee_angle_r")], 1 - arrays["time"] / 2, atol=1e-6)
    assert np.isnan(confidence[:, names.index("knee_angle_l")]).all()
    assert manifest["video"]["offset_s"] == 0.25 and manifest["video"]["relative_path"] == "v.mp4"
    assert meshes and "frames/s" in capsys.readouterr().out
    args = parser.parse_args(["export-blender", str(tmp_path / "missing.osim"), "m.mot", "-o", str(out)])
    with pytest.raises(KinevidError, match="missing.osim"):
        args.func(args)


def test_geometry_on_offset_frame_keeps_its_placement_and_appearance(tmp_path):
    """A brick hung on a PhysicalOffsetFrame of a body: the entry gives the offset in the body
    frame, its dimensions and its colour; a sphere on ground goes to ground_geometry."""
    from opensim_bridge.blender_export import export_blender
    from opensim_bridge.storage import Table, write_table

    model = osim.Model()
    model.setName("offset_test")
    body = osim.Body("box", 2.0, osim.Vec3(0), osim.Inertia(0.1))
    model.addBody(body)
    joint = osim.PinJoint("pin", model.getGround(), osim.Vec3(0, 1, 0), osim.Vec3(0),
                          body, osim.Vec3(0), osim.Vec3(0))
    joint.updCoordinate().setName("swing")
    model.addJoint(joint)
    offset = osim.PhysicalOffsetFrame("holder", body, osim.Transform(
        osim.Rotation(0.5, osim.Vec3(0, 0, 1)), osim.Vec3(0.1, -0.2, 0.3)))
    body.addComponent(offset)
    brick = osim.Brick(osim.Vec3(0.01, 0.02, 0.03))
    brick.setColor(osim.Vec3(0.2, 0.4, 0.6))
    brick.setOpacity(0.5)
    offset.attachGeometry(brick)
    model.getGround().attachGeometry(osim.Sphere(0.05))
    model.finalizeConnections()
    model_path = tmp_path / "offset.osim"
    model.printToXML(str(model_path))
    t = np.linspace(0, 1, 5)
    motion = write_table(Table(t, ["swing"], (30 * t)[:, None], in_degrees=True, name="m"),
                         tmp_path / "m.mot")
    out = tmp_path / "o.kvb"
    export_blender(model_path, motion, out)
    manifest, arrays, _ = read_kvb(out)
    (entry,) = manifest["bodies"][0]["geometry"]
    assert entry["kind"] == "brick" and entry["frame"].endswith("holder")
    np.testing.assert_allclose(entry["half_lengths"], [0.01, 0.02, 0.03])
    np.testing.assert_allclose(entry["translation"], [0.1, -0.2, 0.3], atol=1e-12)
    expect = np.array([[math.cos(0.5), -math.sin(0.5), 0], [math.sin(0.5), math.cos(0.5), 0], [0, 0, 1]])
    np.testing.assert_allclose(quat_to_matrix(entry["rotation"]), expect, atol=1e-12)
    np.testing.assert_allclose(entry["color"], [0.2, 0.4, 0.6])
    assert entry["opacity"] == 0.5
    (ground,) = manifest["ground_geometry"]
    assert ground["kind"] == "sphere" and ground["radius"] == pytest.approx(0.05)
    # The pin joint at (0, 1, 0) swings the body about z by the motion's angle.
    np.testing.assert_allclose(arrays["body_translation"][:, 0], [[0, 1, 0]] * 5, atol=1e-7)
    angle = 2 * np.degrees(np.arctan2(arrays["body_rotation"][:, 0, 3], arrays["body_rotation"][:, 0, 0]))
    np.testing.assert_allclose(angle, 30 * t, atol=1e-4)
