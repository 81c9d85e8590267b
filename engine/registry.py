"""Runs the register_* hooks; owns names, aliases, collisions and which plugin provided what."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError, WeightsError
from .plugins import load_plugins, record_failure


@dataclass
class Style:
    """What a plugin declares: a name and a weights file (no code runs at import).

    `overrides`: the style was made to replace a style of the same name from another plugin
    (`train-style --name wave --overwrite`); without it, a name that another plugin holds leaves
    this style listed as unusable, and the other one is what the name means."""

    name: str
    path: Path
    description: str = ""
    fast_path: Path | None = None  # the same style as the fast CPU network ("shuffle"), if any
    overrides: bool = False
    from_user: bool = False  # a file of the user's own folder, not a plugin's
    painting: Path | None = None  # the painting it was trained on, if it ships (for blends)


@dataclass
class PaintingNet:
    """An any-painting network's weights file (`engine train-universal` writes them)."""

    name: str
    path: Path
    description: str = ""
    overrides: bool = False
    from_user: bool = False


@dataclass
class Entry:
    """A registered thing (style or generator) with the plugin that provided it."""

    name: str
    plugin: str
    item: object
    aliases: tuple[str, ...] = ()
    problem: str | None = None  # set when the entry is broken; the reason a user reads
    note: str = ""  # what a user should know about it: what it overrides, or what hides it

    def kind_name(self, kind: str) -> str:
        return f"the {kind} {self.name!r}"


@dataclass
class Catalog:
    """Every registered style (or generator) by name and alias.

    A name or alias is claimed in registration order, except that an entry marked `overrides`
    claims its name before all others and a user's own files (`from_user`) come after the
    plugins'. A user's file whose name is taken is broken, with the reason; two plugins that
    register one name break it for both (the user must choose). An entry that loses its name
    is kept in `hidden`, so that `engine styles` shows it instead of losing it."""

    kind: str  # "style" or "generator"
    entries: dict[str, Entry] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    hidden: list[Entry] = field(default_factory=list)
    _pending: list[Entry] = field(default_factory=list)

    def add(self, plugin: str, item: object, aliases=()) -> None:
        if self.kind == "style" and not isinstance(item, Style):
            record_failure(plugin, f"registered {item!r:.80} as a style; register an "
                           "engine.registry.Style")
            return
        if self.kind == "painting network" and not isinstance(item, PaintingNet):
            record_failure(plugin, f"registered {item!r:.80} as a painting network; register "
                           "an engine.registry.PaintingNet")
            return
        if self.kind == "generator" and not callable(getattr(item, "generate", None)):
            record_failure(plugin, f"registered {item!r:.80} as a generator; register an "
                           "engine.generators.Generator")
            return
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name.strip():
            record_failure(plugin, f"registered a {self.kind} without a name ({item!r:.80})")
            return
        if isinstance(aliases, str) or not all(isinstance(a, str) and a for a in aliases):
            record_failure(plugin, f"the aliases of {name!r} are not a list of names")
            aliases = ()
        self._pending.append(Entry(name, plugin, item, tuple(aliases)))

    def resolve(self) -> Catalog:
        """Claim names and aliases, overriding entries first (see the class)."""
        pending = sorted(self._pending, key=lambda e: (not getattr(e.item, "overrides", False),
                                                       getattr(e.item, "from_user", False)))
        self._pending = []
        for entry in pending:
            owner = self.owner(entry.name)
            if owner is not None:
                self._collide(entry, owner)
                continue
            self.entries[entry.name] = entry
            kept = []
            for alias in entry.aliases:
                holder = self.owner(alias)
                if holder is None:
                    self.aliases[alias] = entry.name
                    kept.append(alias)
                elif getattr(holder.item, "overrides", False):
                    entry.note = (f"{alias!r} means {holder.kind_name(self.kind)} of plugin "
                                  f"{holder.plugin!r}, which overrides it")
                else:
                    record_failure(entry.plugin, f"alias {alias!r} of {entry.name!r} is taken")
            entry.aliases = tuple(kept)
        return self

    def _collide(self, entry: Entry, owner: Entry) -> None:
        if getattr(owner.item, "overrides", False) and owner.name == entry.name:
            entry.note = f"overridden by {owner.kind_name(self.kind)} of plugin {owner.plugin!r}"
            owner.note = f"overrides the {self.kind} of plugin {entry.plugin!r}"
            for alias in entry.aliases:  # its aliases mean what its name means now
                if self.owner(alias) is None:
                    self.aliases[alias] = owner.name
            self.hidden.append(entry)
            return
        if getattr(entry.item, "from_user", False):
            entry.problem = (f"the name {entry.name!r} is taken by {owner.kind_name(self.kind)} "
                             f"of plugin {owner.plugin!r}; rename the file, or train it again "
                             "with --overwrite to make it the one that name means")
            self.hidden.append(entry)
            return
        owner.problem = (f"the {self.kind} name {entry.name!r} is registered by both plugin "
                         f"{owner.plugin!r} and plugin {entry.plugin!r}; uninstall or rename one")
        self.hidden.append(entry)

    def owner(self, name: str) -> Entry | None:
        """The entry that a name or alias means, if any."""
        return self.entries.get(self.aliases.get(name, name)) if (
            name in self.entries or name in self.aliases) else None

    def get(self, name: str) -> Entry:
        entry = self.owner(name)
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
        except (Exception, SystemExit) as error:  # third-party code: reported, not fatal
            record_failure(impl.plugin_name, f"{hook_name} raised {error!r:.300}")


def _collect(hook_name: str, kind: str) -> Catalog:
    catalog = Catalog(kind)
    _call_each(hook_name, lambda plugin: lambda item, aliases=(): catalog.add(plugin, item,
                                                                               aliases))
    return catalog.resolve()


def add_commands(app) -> None:
    """Let plugins add Typer commands (register_commands), one plugin at a time. A command or
    group whose name is taken (a built-in command, another plugin's) is taken back and
    reported: no plugin replaces a command that the user already has."""
    pm = load_plugins()
    for impl in pm.hook.register_commands.get_hookimpls():
        commands, groups = list(app.registered_commands), list(app.registered_groups)
        taken = {_command_name(c) for c in commands} | {g.name for g in groups}
        try:
            impl.function(app=app)
        except (Exception, SystemExit) as error:
            app.registered_commands[:], app.registered_groups[:] = commands, groups
            record_failure(impl.plugin_name, f"register_commands raised {error!r:.300}")
            continue
        for added, names in ((app.registered_commands, _command_name),
                             (app.registered_groups, lambda g: g.name)):
            for info in [*added]:
                if info in commands or info in groups:
                    continue
                name = names(info)
                if name in taken:
                    added.remove(info)
                    record_failure(impl.plugin_name, f"its command {name!r} is not added: a "
                                   "command of that name exists; the plugin must rename it")
                taken.add(name)


def _command_name(info) -> str:
    """The name Typer gives a registered command."""
    if info.name:
        return info.name
    callback = info.callback
    return getattr(callback, "__name__", "").lower().replace("_", "-")


def styles() -> Catalog:
    """Every registered style; broken ones carry their problem (weights missing or malformed)."""
    from .io.style_files import read_info

    catalog = _collect("register_styles", "style")
    for entry in catalog.entries.values():
        if entry.problem:
            continue
        style = entry.item
        try:
            entry.info = read_info(Path(style.path))
        except WeightsError as error:
            entry.problem = str(error)
        except Exception as error:  # a plugin's odd path object: that entry alone is broken
            entry.problem = f"its weights file cannot be read ({error!r:.200})"
    return catalog


def painting_networks() -> Catalog:
    """Every registered any-painting network; broken ones carry their problem."""
    from .io.painting_files import read_painting_info

    catalog = _collect("register_painting_networks", "painting network")
    for entry in catalog.entries.values():
        try:
            entry.info = read_painting_info(Path(entry.item.path))
        except WeightsError as error:
            entry.problem = str(error)
        except Exception as error:
            entry.problem = f"its weights file cannot be read ({error!r:.200})"
    return catalog


DEFAULT_PAINTING_NETWORK = "universal"


def generators() -> Catalog:
    return _collect("register_generators", "generator")


NETS = ("auto", "full", "fast")


def style_path(name: str, net: str = "auto", catalog: Catalog | None = None) -> Path:
    """The weights file of a registered style, or of a .safetensors path given directly.

    A style may come in two networks: `full` (Johnson et al.) and `fast` (the CPU network).
    `auto` takes the fast one on the CPU, where it is ~7x quicker, and the full one on a GPU.
    `catalog`: the styles already collected (several names looked up: the hooks run once).
    """
    from .backend import on_cpu

    if net not in NETS:
        raise UsageError(f"unknown --net {net!r}; use auto, full or fast")
    candidate = Path(name)
    if candidate.suffix == ".safetensors" and candidate.is_file():
        return candidate
    style = (catalog or styles()).get(name).item
    fast = getattr(style, "fast_path", None)
    if fast is not None and (net == "fast" or (net == "auto" and on_cpu())):
        return Path(fast)
    return Path(style.path)
