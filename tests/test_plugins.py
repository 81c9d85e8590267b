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
