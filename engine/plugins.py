"""The plugin manager: built-in plugins, third-party plugins from entry points, loaded once."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "engine_mlx.plugins"  # unique to this project
DISABLE_ENV = "ENGINE_NO_PLUGINS"  # "1": third-party plugins are not loaded (for debugging)

DEFAULT_PLUGINS = (
    "engine_plugins.user_styles",
    "engine_plugins.shipped_styles",
    "engine_plugins.painting_networks",
    "engine_plugins.noise_generators",
    "engine_plugins.trained_generators",
    "engine_plugins.reference_optimizer",
)


@dataclass
class PluginFailure:
    plugin: str
    error: str


pm = pluggy.PluginManager(hookspecs.PROJECT)
pm.add_hookspecs(hookspecs)
failures: list[PluginFailure] = []
versions: dict[str, str] = {}
_loaded = False


def third_party_enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "") not in ("1", "true", "yes")


def load_plugins() -> pluggy.PluginManager:
    """Register the built-in plugins, then the installed ones; idempotent and lazy."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    from . import __version__

    for name in DEFAULT_PLUGINS:
        versions[name] = __version__
        _register_module(name, name)
    if third_party_enabled():
        found = installed_plugins()
        packages = [package for _, package, _, _ in found]
        for name, package, version, load in found:
            # a package with several entry points: each is a plugin of its own name
            label = package if packages.count(package) == 1 else f"{package}:{name}"
            versions[label] = version
            try:
                module = load()
            except (Exception, SystemExit) as error:  # a broken plugin must not break the engine
                record_failure(label, f"failed to import: {_short(error)}")
                continue
            if pm.is_registered(module):
                continue
            _register(module, label)
    return pm


def installed_plugins() -> list[tuple[str, str, str, Callable[[], object]]]:
    """(entry point name, package, version, loader) of each installed plugin.

    importlib.metadata reads every installed distribution to find them: its import and the scan
    take ~30 ms, a sixth of `engine --help`. So the answer is kept in the user's cache folder
    with the folders of the import path and their modification times (installing, upgrading or
    removing a package changes its folder's), and read from there while those stay the same."""
    stamp = _import_path_stamp()
    cache = _plugin_cache()
    try:
        saved = json.loads(cache.read_text())
        if saved["stamp"] == stamp:
            return [(name, package, version, partial(_load, value))
                    for name, value, package, version in saved["plugins"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    import importlib.metadata

    points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    found = [(ep.name, ep.dist.name if ep.dist else ep.name, ep.dist.version if ep.dist else "",
              ep.load) for ep in points]
    if all(isinstance(ep, importlib.metadata.EntryPoint) for ep in points):
        rows = [(ep.name, ep.value, package, version)
                for ep, (_, package, version, _) in zip(points, found)]
        try:
            from .io.atomic import atomic_write

            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(cache) as stream:
                stream.write(json.dumps({"stamp": stamp, "plugins": rows}).encode())
        except OSError:  # a read-only cache folder: found again next time
            pass
    return found


def _plugin_cache() -> Path:
    """One file, for the last import path it was found on (the `engine` script's is always the
    same; `python -m engine` puts the working folder first)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "engine" / f"plugins-{sys.implementation.cache_tag}.json"


def _import_path_stamp() -> list:
    stamp = []
    for folder in sys.path:
        try:
            stamp.append([folder, os.stat(folder or ".").st_mtime_ns])
        except OSError:
            stamp.append([folder, None])
    return stamp


def _load(value: str) -> object:
    """An entry point's object from its value, `module:attribute.path` (importlib.metadata's
    EntryPoint.load, without importing importlib.metadata)."""
    module, _, attributes = value.partition(":")
    found = importlib.import_module(module.strip())
    for name in attributes.split("[")[0].strip().split("."):
        if name:
            found = getattr(found, name)
    return found


def _short(error: BaseException) -> str:
    """An error as one line of at most 300 characters (pluggy's messages run to a screen)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 300 else text[:297] + "..."


def record_failure(label: str, error: str) -> None:
    """Note a plugin's failure once (hooks run again on every listing)."""
    failure = PluginFailure(label, error)
    if failure not in failures:
        failures.append(failure)


def _register_module(module_name: str, label: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as error:
        record_failure(label, f"failed to import: {_short(error)}")
        return
    _register(module, label)


def _register(module, label: str) -> None:
    try:
        pm.register(module, name=label)
        pm.check_pending()
    except Exception as error:  # misspelled hooks, a duplicate plugin name
        if pm.is_registered(module):
            pm.unregister(module)
        record_failure(label, _short(error))


def plugin_summaries() -> list[dict]:
    """Name, version and hooks of every loaded plugin, then the ones that failed."""
    load_plugins()
    rows = [{"name": name, "version": versions.get(name, ""), "error": None,
             "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])}
            for name, plugin in pm.list_name_plugin()]
    return rows + [{"name": f.plugin, "version": versions.get(f.plugin, ""), "hooks": [],
                    "error": f.error} for f in failures]


def reset() -> None:
    """Forget every plugin (tests)."""
    global _loaded
    for plugin in list(pm.get_plugins()):
        pm.unregister(plugin)
    failures.clear()
    versions.clear()
    _loaded = False
