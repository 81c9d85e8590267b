"""Runs the register_* hooks; owns names, aliases, collisions and which plugin provided what."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError, WeightsError
from .plugins import PluginFailure, failures, load_plugins


@dataclass
class Style:
    """What a plugin declares: a name and a weights file (no code runs at import)."""

    name: str
    path: Path
    description: str = ""
    fast_path: Path | None = None  # the same style as the fast CPU network ("shuffle"), if any


@dataclass
class Entry:
    """A registered thing (style or generator) with the plugin that provided it."""

    name: str
    plugin: str
    item: object
    aliases: tuple[str, ...] = ()
    problem: str | None = None  # set when the entry is broken; the reason a user reads


@dataclass
class Catalog:
    kind: str  # "style" or "generator"
    entries: dict[str, Entry] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def add(self, plugin: str, item: object, aliases=()) -> None:
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            failures.append(PluginFailure(plugin, f"registered a {self.kind} without a name"))
            return
        if name in self.entries:
            first = self.entries[name]
            first.problem = (f"the {self.kind} name {name!r} is registered by both plugin "
                             f"{first.plugin!r} and plugin {plugin!r}; uninstall or rename one")
            return
        self.entries[name] = Entry(name, plugin, item, tuple(aliases))
        for alias in aliases:
            if alias in self.aliases or alias in self.entries:
                failures.append(PluginFailure(plugin, f"alias {alias!r} of {name!r} is taken"))
                continue
            self.aliases[alias] = name

    def get(self, name: str) -> Entry:
        entry = self.entries.get(self.aliases.get(name, name))
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none yet"
            raise UsageError(f"unknown {self.kind} {name!r}; known: {known}")
        if entry.problem:
            raise WeightsError(f"{self.kind} {name!r} is broken: {entry.problem}")
        return entry


def _call_each(hook_name: str, argument) -> None:
    """Call every implementation of a hook, in registration order, one plugin at a time.

    `argument(plugin_name)` gives the value passed to that plugin. A plugin that raises is
    recorded with its error and the others still run.
    """
    pm = load_plugins()
    for impl in getattr(pm.hook, hook_name).get_hookimpls():  # registration order
        name = impl.argnames[0] if impl.argnames else None
        try:
            impl.function(**({name: argument(impl.plugin_name)} if name else {}))
        except Exception as error:
            failures.append(PluginFailure(impl.plugin_name, f"{hook_name} raised {error!r}"))


def _collect(hook_name: str, kind: str) -> Catalog:
    catalog = Catalog(kind)
    _call_each(hook_name, lambda plugin: lambda item, aliases=(): catalog.add(plugin, item,
                                                                               aliases))
    return catalog


def add_commands(app) -> None:
    """Let plugins add Typer commands (register_commands)."""
    _call_each("register_commands", lambda plugin: app)


def styles() -> Catalog:
    """Every registered style; broken ones carry their problem (weights missing or malformed)."""
    from .styles import read_info

    catalog = _collect("register_styles", "style")
    for entry in catalog.entries.values():
        if entry.problem:
            continue
        style = entry.item
        try:
            entry.info = read_info(Path(style.path))
        except WeightsError as error:
            entry.problem = str(error)
    return catalog


def generators() -> Catalog:
    return _collect("register_generators", "generator")


NETS = ("auto", "full", "fast")


def style_path(name: str, net: str = "auto") -> Path:
    """The weights file of a registered style, or of a .safetensors path given directly.

    A style may come in two networks: `full` (Johnson et al.) and `fast` (the CPU network).
    `auto` takes the fast one on the CPU, where it is ~7x quicker, and the full one on a GPU.
    """
    from .transformer import on_cpu

    if net not in NETS:
        raise UsageError(f"unknown --net {net!r}; use auto, full or fast")
    candidate = Path(name)
    if candidate.suffix == ".safetensors" and candidate.is_file():
        return candidate
    style = styles().get(name).item
    fast = getattr(style, "fast_path", None)
    if fast is not None and (net == "fast" or (net == "auto" and on_cpu())):
        return Path(fast)
    return Path(style.path)
