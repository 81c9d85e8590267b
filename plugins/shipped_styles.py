"""The styles that ship with the engine, in the repository's weights/ folder."""

import json
from importlib.resources import files

from engine.hookspecs import hookimpl
from engine.registry import Style

ALIASES = json.loads((files("engine_weights") / "aliases.json").read_text())


@hookimpl
def register_styles(register):
    for resource in sorted(files("engine_weights").iterdir(), key=lambda r: r.name):
        if resource.name.endswith(".safetensors"):
            name = resource.name[: -len(".safetensors")]
            register(Style(name, resource, "ships with the engine"), aliases=ALIASES.get(name, ()))
