"""Moving pictures: video files through PyAV (FFmpeg inside its wheel) and cameras through OpenCV.

A file runs as a three-stage pipeline: a decoding thread (frames in batches, audio packets passed
through), the stylizer on the calling thread, and an encoding thread, joined by bounded queues so
the accelerator does not wait on I/O. The output is written to a temporary file beside the target
and renamed over it only when complete.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..backend import on_cpu
from ..errors import EngineError, ImageError, OutputError, UsageError
from ..stylize import Stylizer
from .atomic import check_writable_folder, describe, publish, temporary_beside


class VideoError(EngineError):
    """A video that cannot be read or written."""


@dataclass
class VideoInfo:
    width: int
    height: int
    rate: Fraction  # average frames per second
    frames: int  # from the container; 0 when it does not say
    duration: float  # seconds, 0 when unknown
    codec: str
    has_audio: bool
    variable_rate: bool


def _open(path: Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file; check the path")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, ValueError, OSError) as error:
        raise VideoError(f"{path}: not a readable video ({error})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


def probe(path: Path) -> VideoInfo:
    container = _open(path)
    try:
        return _info(container)
    finally:
        container.close()


def _info(container) -> VideoInfo:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or Fraction(30)
    duration = float(stream.duration * stream.time_base) if stream.duration else (
        container.duration / 1e6 if container.duration else 0.0)
    frames = stream.frames or int(round(duration * rate))
    base = stream.base_rate or rate
    return VideoInfo(stream.codec_context.width, stream.codec_context.height, Fraction(rate),
                     frames, duration, stream.codec_context.name, bool(container.streams.audio),
                     abs(float(base) - float(rate)) > 0.01 * float(rate))


def output_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """Scale down to max_size on the longest side; H.264 in 4:2:0 needs even sides."""
    if max_size and max(width, height) > max_size:
        scale = max_size / max(width, height)
        width, height = round(width * scale), round(height * scale)
    return max(2, width - width % 2), max(2, height - height % 2)


class Stabilizer:
    """Motion-compensated blending against flicker (OpenCV's DIS optical flow).

    The previous stylized frame is warped along the flow from the current input frame to the
    previous one and blended in where the warped previous *input* matches the current input.
    """

    def __init__(self, weight: float = 0.7, tolerance: float = 12.0, scale: float = 0.5):
        import cv2

        self.cv2 = cv2
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self.weight, self.tolerance, self.scale = weight, tolerance, scale
        self.previous: tuple[np.ndarray, np.ndarray] | None = None

    def warp_previous(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Previous (input, output) warped onto `frame`'s pixels, or None for a first frame."""
        if self.previous is None:
            return None
        cv2 = self.cv2
        before, output = self.previous
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        gray_before = cv2.cvtColor(before, cv2.COLOR_RGB2GRAY)
        small = cv2.resize(gray, None, fx=self.scale, fy=self.scale,
                           interpolation=cv2.INTER_AREA)
        small_before = cv2.resize(gray_before, None, fx=self.scale, fy=self.scale,
                                  interpolation=cv2.INTER_AREA)
        flow = self.flow.calc(small, small_before, None)
        height, width = gray.shape
        flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR) / self.scale
        grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                     np.arange(height, dtype=np.float32))
        map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
        warped_in = cv2.remap(before, map_x, map_y, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        warped_out = cv2.remap(output, map_x, map_y, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        return warped_in, warped_out

    def __call__(self, frame: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) input and stylized frames -> the blended stylized frame."""
        warped = self.warp_previous(frame)
        if warped is None:
            result = stylized
        else:
            warped_in, warped_out = warped
            error = np.abs(warped_in.astype(np.float32) - frame).mean(axis=2, keepdims=True)
            reliable = np.exp(-error / self.tolerance) * self.weight
            result = (reliable * warped_out + (1 - reliable) * stylized + 0.5).astype(np.uint8)
        self.previous = (frame, result)
        return result


def flicker(inputs: Iterable[np.ndarray], outputs: Iterable[np.ndarray],
            tolerance: float = 12.0) -> float:
    """Mean absolute difference (0..255) between each output frame and the previous output frame
    warped along the flow, over pixels where the flow is reliable: lower is steadier."""
    tracker = Stabilizer(weight=1.0, tolerance=tolerance)
    total, count = 0.0, 0
    for frame, out in zip(inputs, outputs):
        warped = tracker.warp_previous(frame)
        if warped is not None:
            warped_in, warped_out = warped
            error = np.abs(warped_in.astype(np.float32) - frame).mean(axis=2)
            reliable = error < tolerance
            if reliable.any():
                difference = np.abs(warped_out.astype(np.float32) - out).mean(axis=2)
                total += float(difference[reliable].mean())
                count += 1
        tracker.previous = (frame, out)
    return total / max(count, 1)


def stylize_frames(frames: Iterable[np.ndarray], stylizer: Stylizer, batch: int = 8,
                   stabilize: bool = False) -> Iterator[np.ndarray]:
    """The Python API: uint8 (H, W, 3) frames in, stylized uint8 frames out, in order.

    Frames are grouped into batches of one size for the compiled network; a frame of another
    size starts a new batch.
    """
    stabilizer = Stabilizer() if stabilize else None
    pending: list[np.ndarray] = []

    def flush():
        for frame, out in zip(pending, stylizer.uint8(np.stack(pending))):
            yield stabilizer(frame, out) if stabilizer else out
        pending.clear()

    for frame in frames:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            frame = (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)
        if pending and pending[0].shape != frame.shape:
            yield from flush()
        pending.append(frame)
        if len(pending) >= batch:
            yield from flush()
    if pending:
        yield from flush()


@dataclass
class VideoProgress:
    frames: int
    total: int
    frames_per_second: float


_END = object()


def _pump(target: Callable, args: tuple, errors: list,
          threads: list | None = None) -> threading.Thread:
    """Run target(*args) on a thread; its error goes to `errors`. The thread is added to
    `threads` before it starts: a Ctrl-C or SIGTERM raised in the caller at any moment finds
    every started thread there to stop and join before the files close under it."""
    def run():
        try:
            target(*args)
        except BaseException as error:  # reported on the main thread
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    if threads is not None:
        threads.append(thread)
    thread.start()
    return thread


def _put(q: queue.Queue, item, stop: threading.Event, errors: list) -> bool:
    """Put `item` in a bounded queue unless the run stops or a stage fails meanwhile (its
    reader would never take it): False then."""
    while not stop.is_set() and not errors:
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, errors: list, stop: threading.Event):
    """The next item, or the first stage's error; _END once the run stops."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if errors:
                raise errors[0]
            if stop.is_set():
                return _END


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")  # containers that hold H.264


def check_video_output(target: Path) -> None:
    """The output's folder takes files and its container holds H.264: before any work."""
    target = Path(target)
    if target.suffix.lower() not in VIDEO_SUFFIXES:
        hint = " (WebM holds VP8, VP9 or AV1, not H.264)" if target.suffix.lower() == ".webm" \
            else ""
        raise OutputError(f"{target}: cannot write {target.suffix or 'no extension'!r} video"
                          f"{hint}; use .mp4, .mkv, .mov or .avi")
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give a file name")
    check_writable_folder(target.parent)


@dataclass
class VideoResult:
    """What was written: the output's size, its frames, and the frames the source declared."""

    info: VideoInfo
    width: int
    height: int
    frames: int
    damaged: str | None = None  # the decoder's error where the source broke off, if it did


def default_batch() -> int:
    """Frames per forward pass: 8 on an accelerator; 1 on the CPU, where larger batches only
    add memory traffic."""
    return 1 if on_cpu() else 8


def stylize_video(source: Path, target: Path, stylizer: Stylizer, batch: int = 8,
                  max_size: int | None = None, stabilize: bool = False, codec: str = "libx264",
                  crf: int = 18, preset: str = "veryfast", overwrite: bool = False,
                  on_progress: Callable[[VideoProgress], None] | None = None) -> VideoResult:
    """Decode, stylize in batches and encode `source` to `target`, keeping the frame timing,
    the frame count, the size (unless max_size) and the audio streams."""
    import av

    source, target = Path(source), Path(target)
    check_video_output(target)
    if not overwrite and target.exists() and target.resolve() == source.resolve():
        raise OutputError(f"{target}: is also the input; choose another output")
    if batch < 1:
        raise UsageError("--batch must be at least 1")
    container = _open(source)
    cleanup = contextlib.ExitStack()  # on every way out: the source closed, the temporary gone
    cleanup.callback(container.close)
    pipeline = None
    try:
        temporary = cleanup.enter_context(temporary_beside(target, target.suffix))
        pipeline = _Pipeline(source, container, av.open(str(temporary), "w"), batch, max_size)
        pipeline.add_streams(codec, {"crf": str(crf), "preset": preset}
                             if codec == "libx264" else {})
        done = pipeline.run(stylizer, Stabilizer() if stabilize else None, on_progress)
        container.close()
        publish(temporary, target)
    except OSError as error:  # the encoder's writes (PyAV's are OSErrors too): a full disk
        raise OutputError(f"{target}: could not write ({describe(error)})") from None
    except av.error.FFmpegError as error:
        raise VideoError(f"{target}: encoding failed ({error})") from None
    finally:
        if pipeline is not None:
            pipeline.halt()  # its threads out of FFmpeg before the files close under them
        cleanup.close()
    return VideoResult(pipeline.info, pipeline.width, pipeline.height, done,
                       pipeline.damaged[0] if pipeline.damaged else None)


class _Pipeline:
    """One video through three stages joined by bounded queues: decoding (a thread), stylizing
    (the calling thread, which owns the device) and encoding (a thread). A stage that fails
    puts its error in `errors`, and the others give up at once."""

    def __init__(self, source: Path, container, output, batch: int, max_size: int | None):
        self.source, self.container, self.output, self.batch = source, container, output, batch
        self.info = _info(container)
        self.width, self.height = output_size(self.info.width, self.info.height, max_size)
        self.stop, self.errors = threading.Event(), []
        self.decoded: queue.Queue = queue.Queue(maxsize=4)
        self.finished: queue.Queue = queue.Queue(maxsize=4)
        self.decoded_frames, self.damaged = 0, []
        self.audio: dict = {}  # input audio stream index -> output stream
        self.threads: list[threading.Thread] = []

    def halt(self) -> None:
        """Stop every stage and wait for its thread (each checks `stop` every 0.1 s)."""
        self.stop.set()
        for thread in self.threads:
            if thread.ident is not None:  # (started)
                thread.join(timeout=10)

    def add_streams(self, codec: str, options: dict[str, str]) -> None:
        import av

        self.video_in = self.container.streams.video[0]
        self.video_in.thread_type = "AUTO"
        out = self.output.add_stream(codec, rate=self.info.rate)
        out.width, out.height, out.pix_fmt = self.width, self.height, "yuv420p"
        out.time_base, out.options, out.thread_type = self.video_in.time_base, options, "AUTO"
        self.video_out = out
        for stream in self.container.streams.audio:
            try:
                self.audio[stream.index] = self.output.add_stream_from_template(stream)
            except (ValueError, av.error.FFmpegError):
                pass  # an audio codec this container cannot hold is dropped

    def _put(self, q: queue.Queue, item) -> bool:
        return _put(q, item, self.stop, self.errors)

    def decode(self) -> None:
        import av

        frames, stamps = [], []
        streams = [self.video_in, *(s for s in self.container.streams.audio
                                    if s.index in self.audio)]
        try:
            for packet in self.container.demux(*streams):
                if packet.stream.index in self.audio:
                    if packet.dts is not None and not self._put(self.decoded, ("audio", packet)):
                        return
                    continue
                try:
                    pictures = packet.decode()
                except av.error.FFmpegError as error:  # a damaged packet: the rest goes on
                    self.damaged.append(str(error))
                    continue
                for frame in pictures:
                    if (frame.width, frame.height) != (self.width, self.height):
                        frame = frame.reformat(self.width, self.height)
                    frames.append(frame.to_ndarray(format="rgb24"))
                    stamps.append((frame.pts, frame.time_base))
                    self.decoded_frames += 1
                    if len(frames) == self.batch:
                        if not self._put(self.decoded, ("video", frames, stamps)):
                            return
                        frames, stamps = [], []
        except av.error.FFmpegError as error:  # the container itself
            self.damaged.append(str(error))
        if self.damaged and not self.decoded_frames:
            raise VideoError(f"{self.source}: decoding failed ({self.damaged[0]}); the file may "
                             "be truncated or damaged")
        if frames:
            self._put(self.decoded, ("video", frames, stamps))
        self._put(self.decoded, _END)

    def encode(self) -> None:
        import av

        next_pts = 0
        while (item := _get(self.finished, [], self.stop)) is not _END:
            if item[0] == "audio":
                packet = item[1]
                packet.stream = self.audio[packet.stream.index]
                self.output.mux(packet)
                continue
            for pixels, (pts, time_base) in zip(item[1], item[2]):
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                if pts is None or pts < next_pts:  # keep timestamps strictly increasing
                    pts = next_pts
                frame.pts, frame.time_base = pts, time_base or self.video_in.time_base
                next_pts = pts + 1
                self.output.mux(self.video_out.encode(frame))
        if not self.stop.is_set():  # (a run that stopped writes nothing more)
            self.output.mux(self.video_out.encode())

    def run(self, stylizer: Stylizer, stabilizer: Stabilizer | None,
            on_progress: Callable[[VideoProgress], None] | None) -> int:
        """Stylize every decoded batch on this thread; the number of frames written."""
        reader = _pump(self.decode, (), self.errors, self.threads)
        writer = _pump(self.encode, (), self.errors, self.threads)
        done, started = 0, time.perf_counter()
        while (item := _get(self.decoded, self.errors, self.stop)) is not _END:
            if item[0] == "video":
                frames = item[1]
                outputs = stylizer.uint8(np.stack(frames))
                if stabilizer:
                    outputs = [stabilizer(f, o) for f, o in zip(frames, outputs)]
                item = ("video", list(outputs), item[2])
                done += len(frames)
                if on_progress:
                    on_progress(VideoProgress(done, max(self.info.frames, done),
                                              done / (time.perf_counter() - started)))
            if not self._put(self.finished, item):
                break
        self._put(self.finished, _END)
        writer.join()
        reader.join(timeout=1)
        if self.errors:
            raise self.errors[0]
        if done == 0:
            raise VideoError(f"{self.source}: no frames could be decoded")
        self.output.close()
        return done


class CameraError(EngineError):
    """No camera, or no way to show its picture."""


def open_camera(index: int):
    import cv2

    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise CameraError(f"camera {index} cannot be opened (none attached, or in use); "
                          "try another --camera N")
    return capture


class Window:
    """An OpenCV preview window; CameraError when this OpenCV build or machine has no display."""

    def __init__(self, title: str):
        import cv2

        self.cv2, self.title = cv2, title
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.name == "nt" or os.uname().sysname == "Darwin"):
            raise CameraError("no display to show the preview on; use --no-window with "
                              "--record out.mp4")
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise CameraError("this OpenCV build has no windows (opencv-python-headless); "
                              "pip install opencv-python, or use --no-window --record out.mp4"
                              ) from None

    def show(self, frame: np.ndarray, text: str) -> int:
        """Show an RGB frame with a caption; the key pressed (-1 if none)."""
        cv2 = self.cv2
        shown = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.putText(shown, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        cv2.imshow(self.title, shown)
        return cv2.waitKey(1) & 0xFF

    def close(self) -> None:
        self.cv2.destroyWindow(self.title)


def run_webcam(capture, stylizers: dict[str, Callable[[], Stylizer]], window=None,
               record: Path | None = None, max_size: int | None = 640, stabilize: bool = False,
               max_frames: int | None = None, rate: float = 30.0) -> int:
    """Read frames from `capture` (OpenCV-like: read() -> (ok, BGR frame)), stylize them, show
    them in `window` and/or record them. Keys: n/space next style, p previous, q/Esc quit.
    Returns the number of frames processed."""
    import cv2

    names = list(stylizers)
    loaded: dict[str, Stylizer] = {}
    current, frames, shown_rate = 0, 0, 0.0
    writer = None
    stabilizer = Stabilizer() if stabilize else None
    last = time.perf_counter()
    try:
        while max_frames is None or frames < max_frames:
            ok, bgr = capture.read()
            if not ok:
                if frames == 0:
                    raise CameraError("the camera gave no picture; check that it is not in use")
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            width, height = output_size(rgb.shape[1], rgb.shape[0], max_size)
            if (width, height) != (rgb.shape[1], rgb.shape[0]):
                rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            name = names[current]
            if name not in loaded:
                loaded[name] = stylizers[name]()
            out = loaded[name].uint8(rgb[None])[0]
            if stabilizer:
                out = stabilizer(rgb, out)
            frames += 1
            now = time.perf_counter()
            shown_rate = 0.9 * shown_rate + 0.1 / max(now - last, 1e-6) if frames > 1 else 0.0
            last = now
            if record is not None:
                if writer is None:
                    writer = _Recorder(record, width, height, rate)
                writer.write(out)
            if window is not None:
                key = window.show(out, f"{name}  {shown_rate:.1f} fps  [n]ext [p]rev [q]uit")
                if key in (ord("q"), 27):
                    break
                if key in (ord("n"), ord(" ")):
                    current = (current + 1) % len(names)
                    stabilizer = Stabilizer() if stabilize else None
                elif key == ord("p"):
                    current = (current - 1) % len(names)
                    stabilizer = Stabilizer() if stabilize else None
    except KeyboardInterrupt:
        pass
    finally:
        if writer is not None:
            writer.close()
        if window is not None:
            window.close()
    return frames


class _Recorder:
    """H.264 into a temporary file, renamed over the target on close."""

    def __init__(self, target: Path, width: int, height: int, rate: float):
        import av

        self.target = Path(target)
        self.cleanup = contextlib.ExitStack()
        self.temporary = self.cleanup.enter_context(temporary_beside(self.target,
                                                                     self.target.suffix))
        self.output = av.open(str(self.temporary), "w")
        self.stream = self.output.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"

    def write(self, frame: np.ndarray) -> None:
        import av

        self.output.mux(self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))

    def close(self) -> None:
        try:
            self.output.mux(self.stream.encode())
            self.output.close()
            publish(self.temporary, self.target)
        finally:
            self.cleanup.close()
