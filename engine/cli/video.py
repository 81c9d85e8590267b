"""Moving pictures: video files and cameras."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from .common import (
    MarginOption,
    NetChoice,
    PaintingSizeOption,
    StrengthOption,
    StyleOption,
    StyleSizeOption,
    app,
    err,
    parse_names,
    progress_bar,
    user_errors,
)


@app.command()
def video(
    source: Annotated[Path, typer.Argument(help="The video file to stylize.")],
    style: StyleOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output video (.mp4, .mkv).")],
    batch: Annotated[Optional[int], typer.Option(
        min=1, help="Frames per forward pass (default: 8 on a GPU, 1 on the CPU, where larger "
        "batches only add memory traffic).")] = None,
    max_size: Annotated[Optional[int], typer.Option(min=16, help="Downscale frames first.")
                        ] = None,
    stabilize: Annotated[bool, typer.Option(
        help="Less flicker: blend in the previous frame along the optical flow.")] = False,
    strength: StrengthOption = 1.0,
    preserve_color: Annotated[bool, typer.Option()] = False,
    style_size: StyleSizeOption = 1.0,
    painting_size: PaintingSizeOption = None,
    crf: Annotated[int, typer.Option(min=0, max=51, help="H.264 quality (lower is better).")
                   ] = 18,
    overwrite: Annotated[bool, typer.Option()] = False,
    net: NetChoice = "auto",
    margin: MarginOption = None,
) -> None:
    """Stylize a video file: frame rate, frame count, size and audio kept; H.264 out."""
    from ..io.video import check_video_output, default_batch, probe, stylize_video
    from ..style_source import stylizer_for

    with user_errors():
        check_video_output(output)
        info = probe(source)
        stylizer, _ = stylizer_for(style, net, strength=strength, preserve_color=preserve_color,
                                   margin=margin, stroke=style_size, painting_size=painting_size)
        with progress_bar(fields=("{task.fields[fps]}",), remaining=True) as progress:
            task = progress.add_task(f"{source.name} in {style}", total=info.frames or None,
                                     fps="")

            def on_progress(p) -> None:
                progress.update(task, completed=p.frames, total=p.total,
                                fps=f"{p.frames_per_second:.1f} frames/s")

            result = stylize_video(source, output, stylizer, batch or default_batch(), max_size,
                                   stabilize,
                                   crf=crf, overwrite=overwrite, on_progress=on_progress)
        short = (f"; the source declared {info.frames} frames but ended after {result.frames}"
                 f": it may be truncated{' or damaged' if result.damaged else ''}"
                 if info.frames > result.frames or result.damaged else "")
        err.print(f"wrote {output} ({result.frames} frames, {result.width}x{result.height} at "
                  f"{float(info.rate):.3g} fps{', audio kept' if info.has_audio else ''}{short})")


@app.command()
def webcam(
    style: Annotated[str, typer.Option("--style", "-s", help="Style(s), comma-separated; "
                                       "keys n/p switch between them.")],
    camera: Annotated[int, typer.Option(min=0, help="Camera index.")] = 0,
    record: Annotated[Optional[Path], typer.Option(help="Also record to this .mp4.")] = None,
    max_size: Annotated[int, typer.Option(min=16, help="Longest side of the frames.")] = 640,
    stabilize: Annotated[bool, typer.Option()] = False,
    window: Annotated[bool, typer.Option(help="Show the live preview window.")] = True,
    frames: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many frames.")
                      ] = None,
    net: NetChoice = "auto",
) -> None:
    """Stylize a camera live: preview window with FPS; n/p switch style, q quits."""
    from ..io.video import CameraError, Window, check_video_output, open_camera, run_webcam
    from ..style_source import check_style, stylizer_for

    with user_errors():
        chosen = parse_names(style)
        for name in chosen:  # each checked before the camera opens
            check_style(name, net)
        if record is not None:
            check_video_output(record)
        if not window and record is None:
            raise UsageError("with --no-window give --record out.mp4, or there is nothing to see")
        shown = Window("engine webcam") if window else None
        capture = open_camera(camera)
        try:
            rate = capture.get(5) or 30.0  # cv2.CAP_PROP_FPS
            count = run_webcam(capture, {n: (lambda n=n: stylizer_for(n, net)[0])
                                         for n in chosen},
                               shown, record, max_size, stabilize, frames, rate)
        finally:
            capture.release()
        if count == 0:
            raise CameraError("no frames came from the camera")
        err.print(f"{count} frames" + (f"; recorded {record}" if record else ""))


