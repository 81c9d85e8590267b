"""A train job's process: `python -m engine.serve.trainer REQUEST.json` trains a style with the
machine's recipe (as `engine train-style PAINTING` does with no options) and reports on stdout,
one JSON object a line: {"event": "ready"}, {"event": "step", ...}, then {"event": "done", ...}
or {"event": "error", "message": ...}. SIGTERM stops it as Ctrl-C stops the command: the run's
progress saved. Its own process: a long training run does not hold the server's MLX thread."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def _say(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class _Stopped(KeyboardInterrupt):
    pass


def _stop(signum, frame) -> None:
    raise _Stopped()


def train(request: dict) -> dict:
    from ..backend import on_cpu
    from ..io import examples
    from ..io.images import find_images
    from ..io.vgg_weights import load_vgg
    from ..training.settings import recipe_settings
    from ..training.style import train_style

    settings = recipe_settings(on_cpu(), request.get("minutes"), request.get("steps"))
    content = request.get("content")
    photos = find_images(content) if content else examples.photos()
    vgg = load_vgg(path=request.get("vgg_weights"))
    last = [0.0]

    def on_step(step) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or step.step + 1 >= step.steps:
            last[0] = now
            _say(event="step", step=step.step + 1, steps=step.steps, loss=step.loss,
                 images_per_second=round(step.images_per_second, 2))

    result = train_style(vgg, Path(request["painting"]), request["name"], photos, settings,
                         on_step=on_step, on_ready=lambda step: _say(event="ready", step=step))
    return {"style": request["name"], "steps": result.steps, "interrupted": result.interrupted}


def main() -> int:
    from ..errors import EngineError

    signal.signal(signal.SIGTERM, _stop)
    if os.environ.get("ENGINE_DEVICE") == "cpu":  # the server's --device cpu
        import mlx.core as mx

        mx.set_default_device(mx.cpu)
    try:
        request = json.loads(Path(sys.argv[1]).read_text())
        _say(event="done", **train(request))
        return 0
    except EngineError as error:
        _say(event="error", message=str(error))
    except KeyboardInterrupt:
        _say(event="error", message="stopped")
    except Exception as error:  # the server shows one line; the trace goes to its log
        import traceback

        traceback.print_exc()
        _say(event="error", message=f"training failed ({type(error).__name__}: {error})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
