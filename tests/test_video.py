"""Video input: timestamps, rotation, damaged files, image folders and the real demo videos.

Test videos are generated with PyAV so every case (variable rate, rotation metadata, truncation,
zero frames) is a real file decoded by FFmpeg."""
from __future__ import annotations

import fractions
import subprocess
import sys
import warnings

import av
import numpy as np
import pytest
from conftest import REPO, data_path

from inference.video import TruncatedVideoWarning, open_video
from opensim_bridge.errors import InputError

W, H = 64, 48


def _image(i: int) -> np.ndarray:
    """A frame with a bright 16x16 block in the top-left corner (to see rotations) and a
    frame-dependent grey level elsewhere (to see order)."""
    img = np.full((H, W, 3), 40 + 4 * (i % 30), np.uint8)
    img[:16, :16] = 255
    # A noisy band spreads the bytes over all frames, so cutting a file loses whole frames
    # rather than only the first key frame.
    img[16:30, 16:] = np.random.default_rng(i).integers(0, 256, (14, W - 16, 3), dtype=np.uint8)
    return img


def write_video(path, n=25, codec="libx264", rate=25, pts=None, time_base=None, rotation=None,
                options=None):
    """Encode n frames; pts/time_base set explicit (possibly uneven) presentation times."""
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        if time_base is not None:
            s.time_base = s.codec_context.time_base = time_base
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_image(i), format="rgb24")
            f.pts = i if pts is None else pts[i]
            if time_base is not None:
                f.time_base = time_base
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_constant_rate_times_and_metadata(tmp_path):
    path = write_video(tmp_path / "cfr.mp4", n=25, rate=25)
    src = open_video(path)
    info = src.info
    assert (info.width, info.height, info.rotation) == (W, H, 0)
    assert info.codec == "h264" and info.n_frames == 25
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(1.0, abs=0.05)
    frames = list(src)
    assert [f.index for f in frames] == list(range(25))
    np.testing.assert_allclose([f.time for f in frames], np.arange(25) / 25, atol=1e-6)
    for f in frames:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
    # order is the encoded order: the grey level rises with the frame number
    grey = [float(f.image[30:, 30:].mean()) for f in frames]
    assert np.all(np.diff(grey) > 0)
    np.testing.assert_allclose(src.timestamps(), [f.time for f in frames], atol=1e-9)


def test_a_file_is_probed_once_until_it_changes(tmp_path, monkeypatch):
    """Opening the same unchanged file again reuses its probe (a run opens it several times);
    a rewritten file is probed afresh."""
    from inference.video import VideoSource

    calls = []
    real = VideoSource._probe_file

    def counting(self, fps):
        calls.append(self.path.name)
        return real(self, fps)

    monkeypatch.setattr(VideoSource, "_probe_file", counting)
    path = write_video(tmp_path / "again.mp4", n=10, rate=25)
    first = open_video(path)
    second = open_video(path)
    assert calls == ["again.mp4"] and second.info == first.info
    assert [f.index for f in second] == list(range(10))
    assert open_video(path, fps=50).info.fps == 50.0 and len(calls) == 2   # another override
    write_video(path, n=14, rate=25)             # same name, new content
    import os
    os.utime(path, ns=(1, 1))                   # a different mtime even on a coarse clock
    assert open_video(path).info.n_frames == 14 and len(calls) == 3


def test_variable_frame_rate_times_kept(tmp_path):
    pts_ms = [0, 10, 50, 60, 200, 210, 215, 400, 433, 500, 700, 701, 760, 800, 1000]
    tb = fractions.Fraction(1, 1000)
    path = write_video(tmp_path / "vfr.mp4", n=len(pts_ms), pts=pts_ms, time_base=tb)
    frames = list(open_video(path))
    np.testing.assert_allclose([f.time for f in frames], np.array(pts_ms) / 1000, atol=1e-6)


def _corner_brightness(img: np.ndarray) -> dict[str, float]:
    h, w = img.shape[:2]
    return {"tl": img[:12, :12].mean(), "tr": img[:12, w - 12:].mean(),
            "bl": img[h - 12:, :12].mean(), "br": img[h - 12:, w - 12:].mean()}


@pytest.mark.parametrize("rotation, corner", [(90, "bl"), (-90, "tr"), (180, "br")])
def test_rotation_metadata_applied(tmp_path, rotation, corner):
    # PyAV's set_display_rotation writes the display matrix (counter-clockwise degrees, as
    # VideoFrame.rotation reads it back); a phone's portrait clip is the -90 case.
    path = write_video(tmp_path / "rot.mp4", n=5, rotation=rotation)
    src = open_video(path)
    assert src.info.rotation == rotation % 360
    expect_wh = (H, W) if rotation % 180 else (W, H)
    assert (src.info.width, src.info.height) == expect_wh
    assert (src.info.coded_width, src.info.coded_height) == (W, H)
    img = next(iter(src)).image
    assert img.shape == (expect_wh[1], expect_wh[0], 3)
    assert img.flags.c_contiguous
    b = _corner_brightness(img)
    # the white block, top-left in the stored picture, is where a counter-clockwise turn puts it
    assert max(b, key=b.get) == corner
    assert b[corner] > 200 and min(b.values()) < 120


def test_truncated_file_yields_frames_then_warns(tmp_path):
    full = write_video(tmp_path / "full.mp4", n=30, options={"movflags": "faststart"})
    whole = list(open_video(full))
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(TruncatedVideoWarning, match=r"decoding stopped after frame \d+ \([\d.]+ s\)"):
        frames = list(open_video(cut))
    assert 0 < len(frames) < 30
    # the frames before the cut are the file's own frames, at their own times
    for a, b in zip(frames, whole):
        assert a.index == b.index and a.time == pytest.approx(b.time)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2


def test_truncated_matroska_warns_from_duration(tmp_path):
    full = write_video(tmp_path / "full.mkv", n=30)
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(TruncatedVideoWarning, match="truncated"):
        frames = list(open_video(cut))
    assert 0 < len(frames) < 30


def test_cut_mp4_without_index_is_a_clear_error(tmp_path):
    full = write_video(tmp_path / "full.mp4", n=30)  # index (moov) written at the end
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.mp4"):
        open_video(cut)


def test_complete_file_gives_no_warning(tmp_path):
    path = write_video(tmp_path / "ok.mkv", n=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedVideoWarning)
        assert len(list(open_video(path))) == 12


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_zero_frame_file_is_an_error(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        c.start_encoding()  # header with the stream, then no packet at all
    with pytest.raises(InputError) as err:
        open_video(path)
    assert str(path) in str(err.value)
    assert "frame" in str(err.value) or "no video stream" in str(err.value)


def test_audio_only_and_non_video_files_are_errors(tmp_path):
    audio = tmp_path / "sound.m4a"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("aac", rate=44100)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 44100, 0
        for p in s.encode(fr):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(InputError, match="no video stream"):
        open_video(audio)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    with pytest.raises(InputError, match="notes.mp4"):
        open_video(text)
    with pytest.raises(InputError, match="not found"):
        open_video(tmp_path / "missing.mp4")


def test_step_max_frames_and_time_window(tmp_path):
    path = write_video(tmp_path / "v.mp4", n=30, rate=30)
    src = open_video(path)
    assert [f.index for f in src.frames(step=3)] == list(range(0, 30, 3))
    assert [f.index for f in src.frames(max_frames=4)] == [0, 1, 2, 3]
    win = list(src.frames(start=0.5, end=0.7))
    assert [f.index for f in win] == [15, 16, 17, 18, 19, 20, 21]
    assert all(f.image is None for f in src.frames(convert=False, max_frames=3))
    # a source reads again from the start each time
    assert len(list(src)) == len(list(src)) == 30


def _write_png(path, img):
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt = img.shape[1], img.shape[0], "rgb24"
    packets = cc.encode(av.VideoFrame.from_ndarray(img, format="rgb24")) + cc.encode(None)
    path.write_bytes(b"".join(bytes(p) for p in packets))


def test_image_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in (1, 2, 10, 11):  # natural order differs from plain string order here
        _write_png(folder / f"img_{i}.png", np.full((H, W, 3), i * 10, np.uint8))
    (folder / "readme.txt").write_text("ignored")
    src = open_video(folder, fps=50)
    assert src.info.is_image_folder and (src.info.width, src.info.height) == (W, H)
    assert src.info.n_frames == 4
    frames = list(src)
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 20, 100, 110]  # PNG is lossless
    np.testing.assert_allclose([f.time for f in frames], np.arange(4) / 50)
    np.testing.assert_allclose(open_video(folder).timestamps(), np.arange(4) / 30)  # default fps

    _write_png(folder / "img_12.png", np.zeros((H + 2, W, 3), np.uint8))
    with pytest.raises(InputError, match="img_12.png"):
        list(open_video(folder))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no image files"):
        open_video(empty)


@pytest.mark.parametrize("cam, codec", [("cam01", "h264"), ("cam02", "vp9"), ("cam03", "h264"),
                                        ("cam04", "h264")])
def test_pose2sim_videos(cam, codec):
    path = data_path("pose2sim", "Pose2Sim", "Demo_SinglePerson", "videos", f"{cam}.mp4")
    src = open_video(path)
    assert src.info.codec == codec and src.info.rotation == 0
    assert src.info.height == 1920 and src.info.fps == pytest.approx(60)
    times = [f.time for f in src.frames(convert=False)]
    assert len(times) == 100 == src.info.n_frames
    np.testing.assert_allclose(times, np.arange(100) / 60, atol=1e-4)
    first = next(iter(src)).image
    assert first.shape == (src.info.height, src.info.width, 3)


def test_sports2d_demo():
    src = open_video(data_path("sports2d", "Sports2D", "Demo", "demo.mp4"))
    assert (src.info.width, src.info.height, src.info.codec) == (1768, 994, "vp9")
    t = src.timestamps()
    assert len(t) == 230
    np.testing.assert_allclose(t, np.arange(230) / 30, atol=1e-4)
    frames = list(src.frames(start=7.0, convert=True))
    assert [f.index for f in frames] == list(range(210, 230))
    assert frames[-1].image.shape == (994, 1768, 3)


def test_streaming_keeps_memory_bounded():
    """Decoding a whole 1080p file with RGB conversion must not accumulate frames: 100 frames
    would be ~600 MB. A fresh interpreter gives a clean peak-RSS measurement."""
    path = data_path("pose2sim", "Pose2Sim", "Demo_SinglePerson", "videos", "cam01.mp4")
    code = (
        "import resource, sys\n"
        "from inference.video import open_video\n"
        "src = open_video(sys.argv[1])\n"
        "it = iter(src); next(it)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "n = 1 + sum(1 for f in it if f.image.shape[0] == 1920)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(n, (peak - base) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    n, growth_mb = int(out[0]), float(out[1])
    assert n == 100
    assert growth_mb < 100, f"RSS grew by {growth_mb:.0f} MB while streaming"


def test_seek_gives_the_same_frames_and_indices(tmp_path):
    """A reader that starts mid-video (parallel pose estimation) jumps to the key frame before
    its start and still gets exactly the frames, indices and times of a read from the start."""
    path = tmp_path / "gop.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.gop_size = 7              # key frames every 7 frames
        for i in range(60):
            f = av.VideoFrame.from_ndarray(_image(i), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    src = open_video(path)
    full = list(src.frames())
    for start, end, step in ((0.5, 0.9, 1), (1.0, 10.0, 2), (0.0, 0.2, 1), (1.9, 3.0, 1)):
        want = [f for f in full if start - 1e-9 <= f.time <= end + 1e-9 and f.index % step == 0]
        got = list(src.frames(start=start, end=end, step=step, seek=True))
        assert [f.index for f in got] == [f.index for f in want], (start, end, step)
        np.testing.assert_allclose([f.time for f in got], [f.time for f in want], atol=1e-9)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a.image, b.image)
