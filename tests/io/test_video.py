"""Video files and the webcam path: synthesized clips, the shared sample clip, a fake camera."""

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engine.errors import EngineError
from engine.io.style_files import load_style
from engine.io.video import flicker, probe, run_webcam, stylize_frames, stylize_video
from engine.stylize import Stylizer

VTEST = Path(__file__).resolve().parents[3] / "shared" / "data" / "video" / "vtest.avi"


def make_clip(path: Path, frames=12, size=(48, 32), rate=Fraction(25), audio=False,
              pts_step=None) -> Path:
    """A moving gradient (and a sine tone) written with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if size[0] % 2 == 0 else "mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if pts_step:
            stream.time_base = Fraction(1, 1000)
        sound = container.add_stream("aac", rate=22050) if audio else None
        xx, yy = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
        for i in range(frames):
            pixels = np.stack([(xx * 5 + i * 7) % 256, (yy * 7) % 256,
                               np.full_like(xx, 40 + i * 9)], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if pts_step:
                frame.pts, frame.time_base = sum(pts_step[:i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if sound:
            samples = int(22050 * frames / rate)
            tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 22050)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[start:start + 1024][None]
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate, frame.pts = 22050, start
                container.mux(sound.encode(frame))
            container.mux(sound.encode())
    return path


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def stylizer(tiny_style_file):
    net, info = load_style(tiny_style_file)
    return Stylizer(net, info)


def test_video_keeps_rate_count_size_and_audio(tmp_path, stylizer):
    clip = make_clip(tmp_path / "clip.mp4", frames=14, audio=True)
    out = tmp_path / "out.mp4"
    seen = []
    stylize_video(clip, out, stylizer, batch=4, on_progress=seen.append)
    source, result = probe(clip), probe(out)
    assert (result.width, result.height) == (48, 32) and result.rate == source.rate
    assert len(frames_of(out)) == 14 and result.has_audio
    assert seen[-1].frames == 14
    original, stylized = frames_of(clip), frames_of(out)
    assert np.abs(original[3].astype(float) - stylized[3]).mean() > 5  # it was stylized
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_variable_frame_rate_and_max_size(tmp_path, stylizer):
    steps = [40, 40, 80, 20, 40, 120, 40, 40]
    clip = make_clip(tmp_path / "vfr.mkv", frames=9, size=(64, 40), pts_step=steps)
    out = tmp_path / "vfr-out.mkv"
    stylize_video(clip, out, stylizer, batch=3, max_size=33)
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        stamps_in = [float(f.pts * f.time_base) for f in a.decode(video=0)]
        stamps_out = [float(f.pts * f.time_base) for f in b.decode(video=0)]
    assert np.allclose(stamps_in, stamps_out, atol=0.002)
    info = probe(out)
    assert (info.width, info.height) == (32, 20)  # longest side 33 -> even sides


def test_bad_videos_are_clear_errors_and_leave_no_file(tmp_path, stylizer):
    out = tmp_path / "out.mp4"
    (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 50)
    still = tmp_path / "still.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(still)
    audio_only = tmp_path / "tone.m4a"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt",
                                           layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    clip = make_clip(tmp_path / "clip.mp4", frames=30)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(clip.read_bytes()[:1500])
    for bad in ("missing.mp4", "junk.mp4", "tone.m4a", "cut.mp4"):
        with pytest.raises(EngineError):
            stylize_video(tmp_path / bad, out, stylizer)
        assert not out.exists()
    with pytest.raises(EngineError, match="does not exist"):
        stylize_video(clip, tmp_path / "nope" / "out.mp4", stylizer)
    out.write_bytes(b"keep me")
    with pytest.raises(EngineError):
        stylize_video(tmp_path / "junk.mp4", out, stylizer)
    assert out.read_bytes() == b"keep me"  # an old file at the target is never lost
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_video_one_line_errors(tmp_path, tiny_style_file):
    import shutil

    from engine.io.style_files import style_dir
    style_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_style_file, style_dir() / "tiny.safetensors")
    clip = make_clip(tmp_path / "clip.mp4", frames=5)

    def engine(*args):
        return subprocess.run([sys.executable, "-m", "engine", *map(str, args)],
                              capture_output=True, text=True)

    ok = engine("video", clip, "--style", "tiny", "-o", tmp_path / "out.mp4", "--batch", "2")
    assert ok.returncode == 0, ok.stderr
    assert len(frames_of(tmp_path / "out.mp4")) == 5
    for args in (["missing.mp4", "--style", "tiny"], [clip, "--style", "nope"]):
        bad = engine("video", *args, "-o", tmp_path / "x.mp4")
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    cam = engine("webcam", "--style", "tiny", "--camera", "9", "--no-window", "--record",
                 tmp_path / "cam.mp4")
    assert cam.returncode == 2 and "camera 9" in cam.stderr and "Traceback" not in cam.stderr


def test_frame_api_and_stabilization_lower_flicker(stylizer):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (40, 56, 3)).astype(np.uint8)
    # a slowly panning scene with sensor noise: stylized frames flicker on the noise
    frames = [np.clip(np.roll(base, i, axis=1).astype(int) + rng.integers(-12, 13, base.shape),
                      0, 255).astype(np.uint8) for i in range(10)]
    plain = list(stylize_frames(frames, stylizer, batch=4))
    steady = list(stylize_frames(frames, stylizer, batch=4, stabilize=True))
    assert len(plain) == 10 and plain[0].shape == (40, 56, 3) and plain[0].dtype == np.uint8
    assert flicker(frames, steady) < flicker(frames, plain)
    # frames of mixed sizes come out in order, each at its own size
    mixed = list(stylize_frames([frames[0], frames[1][:20], frames[2]], stylizer, batch=8))
    assert [m.shape[0] for m in mixed] == [40, 20, 40]


class FakeCamera:
    def __init__(self, frames):
        self.frames = list(frames)

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)


class FakeWindow:
    def __init__(self, keys):
        self.keys, self.shown, self.closed = list(keys), [], False

    def show(self, frame, text):
        self.shown.append((frame.shape, text.split()[0]))
        return self.keys.pop(0) if self.keys else -1

    def close(self):
        self.closed = True


def test_webcam_with_a_fake_camera_switches_styles_records_and_quits(tmp_path, stylizer):
    frames = [np.full((30, 40, 3), 20 * i, np.uint8) for i in range(8)]
    window = FakeWindow([-1, ord("n"), -1, ord("p"), ord("q")])
    record = tmp_path / "cam.mp4"
    count = run_webcam(FakeCamera(frames), {"a": lambda: stylizer, "b": lambda: stylizer},
                       window, record, max_size=None, rate=15)
    assert count == 5 and window.closed
    assert [name for _, name in window.shown] == ["a", "a", "b", "b", "a"]
    assert len(frames_of(record)) == 5 and probe(record).rate == 15
    with pytest.raises(EngineError, match="no picture"):
        run_webcam(FakeCamera([]), {"a": lambda: stylizer}, None, None)


@pytest.mark.skipif(not VTEST.is_file(), reason=f"{VTEST} not present (shared data)")
def test_the_shared_sample_clip(tmp_path, stylizer):
    info = probe(VTEST)
    assert (info.width, info.height, info.frames) == (768, 576, 795)
    out = tmp_path / "vtest.mp4"
    stylize_video(VTEST, out, stylizer, batch=8, max_size=96)
    result = probe(out)
    assert result.rate == info.rate and len(frames_of(out)) == 795
