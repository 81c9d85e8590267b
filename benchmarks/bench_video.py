"""End-to-end video: frames/s for decode + stylize + encode (engine.io.video.stylize_video), and
the flicker figure with and without --stabilize.

    python benchmarks/bench_video.py --style starry --sizes 1280x720,1920x1080 --frames 240
    python benchmarks/bench_video.py --style starry --flicker ../shared/data/video/vtest.avi

The source clip is synthesized from ../shared/data/video/vtest.avi (scaled to each size, looped)
with libx264 before timing (or from a folder of photos, --source DIR); its creation is not timed. One JSON line per measurement.
"""

import argparse
import json
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import engine  # noqa: F401,E402,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import numpy as np

from engine.io.style_files import read_info
from engine.io.video import stylize_frames, stylize_video
from engine.nets.transformer import NETWORK_NAMES
from engine.registry import NETS, style_path
from engine.stylize import Stylizer

VTEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "vtest.avi"


def make_source(path: Path, source: Path, width: int, height: int, frames: int) -> None:
    if source.is_dir():  # a folder of photos: each held for 10 frames
        from PIL import Image
        base = [np.asarray(Image.open(p).convert("RGB").resize((width, height)))
                for p in sorted(source.glob("*.jpg")) for _ in range(10)]
    else:
        with av.open(str(source)) as reader:
            base = [f.reformat(width, height).to_ndarray(format="rgb24")
                    for _, f in zip(range(100), reader.decode(video=0))]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "20"}
        for i in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(base[i % len(base)],
                                                             format="rgb24")))
        out.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", default="starry")
    parser.add_argument("--source", type=Path, default=VTEST)
    parser.add_argument("--sizes", default="1280x720,1920x1080")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--flicker", type=Path, help="measure flicker on this clip instead")
    parser.add_argument("--flicker-size", type=int, default=384)
    parser.add_argument("--net", choices=NETS, default="auto")
    parser.add_argument("--margin", type=int, default=None,
                        help="reflected pixels around each frame (default: the style's own)")
    args = parser.parse_args()
    path = style_path(args.style, args.net)
    stylizer = Stylizer.from_file(path, margin=args.margin)
    network_kind = NETWORK_NAMES[read_info(path).config.arch]
    device = str(mx.default_device())
    if args.flicker:
        from engine.io.video import flicker
        with av.open(str(args.flicker)) as reader:
            stream = reader.streams.video[0]
            scale = args.flicker_size / max(stream.width, stream.height)
            w, h = round(stream.width * scale) // 2 * 2, round(stream.height * scale) // 2 * 2
            frames = [f.reformat(w, h).to_ndarray(format="rgb24")
                      for _, f in zip(range(120), reader.decode(video=0))]
        for stabilize in (False, True):
            out = list(stylize_frames(frames, stylizer, args.batch, stabilize=stabilize))
            print(json.dumps({"flicker": flicker(frames, out), "stabilize": stabilize,
                              "input_flicker": flicker(frames, frames), "size": f"{w}x{h}",
                              "frames": len(frames), "style": args.style, "device": device,
                              "network": network_kind}),
                  flush=True)
        return
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        with tempfile.TemporaryDirectory() as folder:
            source, target = Path(folder) / "in.mp4", Path(folder) / "out.mp4"
            make_source(source, args.source, width, height, args.frames)
            stylize_video(source, target, stylizer, args.batch)  # warm: compile this shape
            started = time.perf_counter()
            stylize_video(source, target, stylizer, args.batch)
            seconds = time.perf_counter() - started
            batch = np.zeros((args.batch, height, width, 3), np.uint8)
            stylizer.uint8(batch)
            started = time.perf_counter()
            for _ in range(max(1, args.frames // args.batch)):
                stylizer.uint8(batch)
            network = (time.perf_counter() - started) / (max(1, args.frames // args.batch)
                                                         * args.batch)
            print(json.dumps({"size": size, "frames": args.frames, "batch": args.batch,
                              "end_to_end_fps": args.frames / seconds,
                              "network_only_fps": 1 / network, "style": args.style,
                              "device": device, "network": network_kind,
                              "margin": stylizer.margin}), flush=True)


if __name__ == "__main__":
    main()
