"""One test per hook, the registry's rules, and the worked third-party plugin."""

import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import types

import mlx.core as mx
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from engine import hookspecs, plugins, registry
from engine.cli import app as cli_app
from engine.errors import UsageError, WeightsError
from engine.generators import Generator
from engine.hookspecs import hookimpl
from engine.registry import Style
from tests.conftest import write_image


@pytest.fixture(autouse=True)
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def _plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    plugins.load_plugins()
    plugins._register(module, name)
    return module


def test_register_styles(tiny_style_file):
    _plugin("p1", register_styles=lambda register: register(
        Style("mine", tiny_style_file), aliases=("m",)))
    catalog = registry.styles()
    assert catalog.get("m").name == "mine" and catalog.get("mine").plugin == "p1"
    assert registry.style_path("m") == tiny_style_file
    with pytest.raises(UsageError, match="unknown style 'nope'; known: .*mine"):
        catalog.get("nope")


def test_register_generators():
    def make(count, seed, size):
        return mx.full((count, size, size, 3), seed / 10)

    _plugin("p2", register_generators=lambda register: register(Generator("flat", make)))
    generator = registry.generators().get("flat").item
    np.testing.assert_allclose(np.array(generator.generate(2, 3, 8)), 0.3, atol=1e-6)


def test_register_painting_networks(tmp_path, tiny_vgg, painting):
    from engine.io.painting_files import encoder_arrays, save_painting_network
    from engine.nets.config import NetConfig
    from engine.nets.universal import UniversalConfig, UniversalNet
    from engine.registry import PaintingNet
    from engine.style_source import open_style

    model = UniversalNet(UniversalConfig(NetConfig(8, 1, "shuffle"), 16, 6, (4, 8, 8, 8)))
    path = tmp_path / "mini.safetensors"
    save_painting_network(path, model, encoder_arrays(tiny_vgg), {}, 3)
    (tmp_path / "bad.safetensors").write_bytes(b"not a network")
    _plugin("p4", register_painting_networks=lambda register: [
        register(PaintingNet("mini", path)),
        register(PaintingNet("bad", tmp_path / "bad.safetensors")),
        register("not a network")])
    catalog = registry.painting_networks()
    assert catalog.get("mini").plugin == "p4" and "universal" in catalog.entries
    with pytest.raises(WeightsError, match="bad"):
        catalog.get("bad")
    assert any(f.plugin == "p4" and "PaintingNet" in f.error for f in plugins.failures)
    big = write_image(tmp_path / "big.png", (80, 72), seed=3)
    source = open_style(str(big), painting_net="mini")
    assert source.net.config == NetConfig(8, 1, "shuffle") and source.info.steps == 3


def test_register_commands():
    def add(app):
        @app.command("ping")
        def ping():
            typer.echo("pong")

    _plugin("p3", register_commands=add)
    app = typer.Typer()

    @app.command()
    def other():
        pass

    registry.add_commands(app)
    assert CliRunner().invoke(app, ["ping"]).output.strip() == "pong"


def test_every_hook_has_a_test():
    hooks = [name for name, value in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("register_")]
    assert hooks
    tested = {name for name in globals() if name.startswith("test_register_")}
    assert {f"test_{hook}" for hook in hooks} <= tested


def test_built_in_generators_are_deterministic():
    catalog = registry.generators()
    for name in ("plasma", "marble"):
        generator = catalog.get(name).item
        a, b = np.array(generator.generate(2, 7, 32)), np.array(generator.generate(2, 7, 32))
        c = np.array(generator.generate(2, 8, 32))
        assert a.shape == (2, 32, 32, 3) and a.min() >= 0 and a.max() <= 1
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)


def test_duplicate_name_is_an_error_naming_both_plugins(tiny_style_file):
    for name in ("alpha", "beta"):
        _plugin(name, register_styles=lambda register: register(Style("same", tiny_style_file)))
    with pytest.raises(WeightsError, match="'alpha' and plugin 'beta'"):
        registry.styles().get("same")


def test_a_plugin_raising_in_a_hook_is_reported_and_others_work(tiny_style_file):
    def broken(register):
        raise RuntimeError("boom")

    _plugin("bad", register_styles=broken)
    _plugin("good", register_styles=lambda register: register(Style("ok", tiny_style_file)))
    assert registry.styles().get("ok")
    assert any(f.plugin == "bad" and "boom" in f.error for f in plugins.failures)


def test_misspelled_hook_is_caught():
    module = types.ModuleType("typo")
    module.register_stlyes = hookimpl(lambda register: None)
    plugins.load_plugins()
    plugins._register(module, "typo")
    assert any(f.plugin == "typo" and "register_stlyes" in f.error for f in plugins.failures)
    assert not plugins.pm.is_registered(module)


def test_a_style_with_missing_weights_is_a_broken_entry(tmp_path):
    _plugin("p", register_styles=lambda register: register(Style("ghost", tmp_path / "no.st")))
    entry = registry.styles().entries["ghost"]
    assert "not found" in entry.problem
    result = CliRunner().invoke(cli_app, ["styles", "--json"])
    assert result.exit_code == 0
    assert any(row["name"] == "ghost" and row["problem"] for row in json.loads(result.output))


def test_plugins_load_once():
    first = plugins.load_plugins()
    count = len(first.get_plugins())
    assert plugins.load_plugins() is first and len(first.get_plugins()) == count


def test_repository_plugins_folder_is_not_a_top_level_package(tmp_path):
    probe = "import importlib.util as u; print(u.find_spec('plugins'), u.find_spec('engine_plugins') is not None)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, check=True)
    assert done.stdout.split() == ["None", "True"]


def _engine(*args, env=None):
    exe = shutil.which("engine") or pytest.fail("the engine console script is not installed")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_third_party_plugin_in_a_subprocess(tmp_path, photo):
    if importlib.util.find_spec("engine_demo_plugin") is None:
        pytest.fail("install examples/engine-demo-plugin first (the README's test command does)")
    listed = _engine("styles", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["demo-wave"]["plugin"] == "engine-demo-plugin" and not rows["demo-wave"]["problem"]
    out = tmp_path / "waved.png"
    applied = _engine("apply", "--style", "demo-wave", str(photo), "-o", str(out))
    assert applied.returncode == 0, applied.stderr
    assert out.is_file()
    assert "hello you" in _engine("demo-hello", "--name", "you").stdout
    gen = tmp_path / "gen"
    gen.mkdir()
    assert _engine("generate", "-g", "checkerboard", "-n", "2", "--size", "32", "-o",
                   str(gen)).returncode == 0
    assert len(list(gen.glob("checkerboard-0-*.png"))) == 3
    listed_plugins = json.loads(_engine("plugins", "--json").stdout)
    demo = next(row for row in listed_plugins if row["name"] == "engine-demo-plugin")
    assert demo["version"] == "0.1.0" and "register_styles" in demo["hooks"]
    off = json.loads(_engine("--no-plugins", "styles", "--json").stdout)
    assert "demo-wave" not in {row["name"] for row in off}


def test_the_reference_optimizer_comes_from_a_built_in_plugin():
    rows = {row["name"]: row for row in plugins.plugin_summaries()}
    assert rows["engine_plugins.reference_optimizer"]["hooks"] == ["register_commands"]
    app = typer.Typer()

    @app.command()
    def other():
        pass

    registry.add_commands(app)
    assert "optimize" in {command.name for command in app.registered_commands}


# ------------------------------------------------- plugins cannot take the engine down


class _EntryPoint:
    def __init__(self, name, load, package="pkg"):
        self.name, self._load = name, load
        self.dist = types.SimpleNamespace(name=package, version="9.9")

    def load(self):
        return self._load()


def _module(name, **hooks):
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def _entry_points(monkeypatch, *points):
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: list(points))


def test_every_entry_point_of_a_package_loads(monkeypatch, tiny_style_file):
    first = _module("one", register_styles=lambda register: register(
        Style("from-one", tiny_style_file)))
    second = _module("two", register_styles=lambda register: register(
        Style("from-two", tiny_style_file)))
    _entry_points(monkeypatch, _EntryPoint("one", lambda: first),
                  _EntryPoint("two", lambda: second))
    catalog = registry.styles()
    assert catalog.get("from-one").plugin == "pkg:one"
    assert catalog.get("from-two").plugin == "pkg:two"
    assert not plugins.failures


def test_a_plugin_that_exits_or_raises_at_import_is_isolated(monkeypatch):
    def exits():
        sys.exit(3)

    def raises():
        raise ImportError("no module named 'missing_dependency'\n" + "pluggy noise\n" * 50)

    _entry_points(monkeypatch, _EntryPoint("a", exits, "quitter"),
                  _EntryPoint("b", raises, "broken"))
    result = CliRunner().invoke(cli_app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert "SystemExit" in rows["quitter"]["error"]
    assert "missing_dependency" in rows["broken"]["error"]
    assert "\n" not in rows["broken"]["error"] and len(rows["broken"]["error"]) <= 300
    assert "engine_plugins.shipped_styles" in rows


def test_rejected_registrations_and_hook_errors_are_shown(tiny_style_file):
    _plugin("odd", register_styles=lambda register: (
        register("not a style"), register(Style("", tiny_style_file)),
        register(Style("fine", tiny_style_file))))
    _plugin("crash", register_generators=lambda register: 1 / 0)
    result = CliRunner().invoke(cli_app, ["plugins", "--json"])
    errors = [row["error"] for row in json.loads(result.output) if row["error"]]
    assert any("as a style" in e for e in errors)
    assert any("without a name" in e for e in errors)
    assert any("ZeroDivisionError" in e for e in errors)
    assert registry.styles().get("fine")


def test_a_plugin_cannot_replace_a_built_in_command():
    def add(app):
        @app.command("apply")
        def hijack():
            typer.echo("hijacked")

        @app.command("extra")
        def extra():
            typer.echo("extra")

    _plugin("thief", register_commands=add)
    app = typer.Typer()

    @app.command("apply")
    def apply():
        typer.echo("real")

    registry.add_commands(app)
    runner = CliRunner()
    assert runner.invoke(app, ["apply"]).output.strip() == "real"
    assert runner.invoke(app, ["extra"]).output.strip() == "extra"
    assert any(f.plugin == "thief" and "'apply'" in f.error for f in plugins.failures)


@pytest.mark.parametrize("make, needle", [
    (lambda count, seed, size: mx.zeros((count - 1, size, size, 3)), "returned (1, 16, 16, 3)"),
    (lambda count, seed, size: mx.zeros((count, size, size)), "not 2 images"),
    (lambda count, seed, size: mx.full((count, size, size, 3), float("nan")), "not finite"),
    (lambda count, seed, size: "pixels", "returned str"),
])
def test_generator_output_is_checked_before_it_is_saved(tmp_path, make, needle):
    _plugin("gen", register_generators=lambda register: register(Generator("g", make)))
    result = CliRunner().invoke(cli_app, ["generate", "-g", "g", "-n", "2", "--size", "16",
                                          "-o", str(tmp_path)])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


def test_installed_plugins_are_found_once_then_read_from_the_cache(monkeypatch, tmp_path):
    """The entry points come from importlib.metadata once; later starts read them from the cache
    while the import path's folders stay as they were, and find them again when one changes."""
    import importlib.metadata

    found = plugins.installed_plugins()
    assert ("demo", "engine-demo-plugin") in [(name, package) for name, package, _, _ in found]
    calls = []
    real = importlib.metadata.entry_points

    def counted(**options):
        calls.append(options)
        return real(**options)

    monkeypatch.setattr(importlib.metadata, "entry_points", counted)
    again = plugins.installed_plugins()
    assert calls == []
    assert [row[:3] for row in again] == [row[:3] for row in found]
    assert [load() for *_, load in again] == [load() for *_, load in found]
    folder = tmp_path / "new-packages"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    plugins.installed_plugins()
    assert len(calls) == 1
    plugins.installed_plugins()  # the new path's answer is kept too
    (folder / "something.pth").write_text("")  # a package installed there
    stamp = folder.stat().st_mtime_ns + 10**9  # (a clock tick may be coarser than two writes)
    os.utime(folder, ns=(stamp, stamp))
    plugins.installed_plugins()
    assert len(calls) == 2
