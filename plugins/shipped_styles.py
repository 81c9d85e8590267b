"""The styles that ship with the engine, in the repository's weights/ folder; the fast CPU network
of each, where there is one, in weights/fast/ under the same name."""

import json
from importlib.resources import files

from engine.hookspecs import hookimpl
from engine.registry import Style

ALIASES = json.loads((files("engine_weights") / "aliases.json").read_text())


@hookimpl
def register_styles(register):
    fast = files("engine_weights") / "fast"
    paintings = files("engine_weights") / "paintings"
    for resource in sorted(files("engine_weights").iterdir(), key=lambda r: r.name):
        if resource.name.endswith(".safetensors"):
            name = resource.name[: -len(".safetensors")]
            cpu, painting = fast / resource.name, paintings / f"{name}.jpg"
            register(Style(name, resource, "ships with the engine",
                           fast_path=cpu if cpu.is_file() else None,
                           painting=painting if painting.is_file() else None),
                     aliases=ALIASES.get(name, ()))
