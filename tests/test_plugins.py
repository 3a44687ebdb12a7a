"""Plugins: entry-point registration, listing, duplicate names, and core's independence."""

from __future__ import annotations

import ast
import json
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import fuse
from fuse.base import plugin_manager
from fuse.base.errors import PluginError
from fuse.cli import cli

ROOT = Path(__file__).resolve().parents[1]
BUILTINS = {("encoder", "timm"), ("encoder", "hf-text"), ("encoder", "hf-vision"), ("head", "linear"),
            ("head", "residual-mlp"), ("objective", "infonce"), ("dataset", "emoji")}


def test_plugins_json_lists_builtins_with_package():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    found = {(r["kind"], r["name"]) for r in rows}
    assert BUILTINS <= found
    timm_row = next(r for r in rows if r["name"] == "timm")
    assert timm_row["package"].startswith("fuse-align ")
    assert timm_row["modalities"] == ["image"]


def test_plugins_table_and_kind_filter():
    result = CliRunner().invoke(cli, ["plugins", "--kind", "head"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines and all(line.startswith("head") for line in lines)


@pytest.fixture
def throwaway_plugin():
    """Register an in-process plugin module and always unregister it."""
    registered = []

    def register(module):
        plugin_manager.register_plugin(module, name=module.__name__)
        registered.append(module)

    yield register
    for module in registered:
        plugin_manager.unregister_plugin(module)


def test_duplicate_name_names_both_packages(throwaway_plugin):
    from fuse.plugins.timm_vision import TimmEncoder

    mod = types.ModuleType("shadowing_plugin")

    @fuse.hookimpl
    def register_encoders(register):
        register("timm", TimmEncoder)

    mod.register_encoders = register_encoders
    throwaway_plugin(mod)
    with pytest.raises(PluginError, match=r"encoder 'timm' is registered twice: by fuse-align .* and by shadowing_plugin"):
        plugin_manager.registry("encoder")


def test_component_without_options_schema_is_refused(throwaway_plugin):
    mod = types.ModuleType("schemaless_plugin")

    class NoOptions:
        pass

    @fuse.hookimpl
    def register_heads(register):
        register("schemaless", NoOptions)

    mod.register_heads = register_heads
    throwaway_plugin(mod)
    with pytest.raises(PluginError, match="needs a nested `Options"):
        plugin_manager.registry("head")


def test_hook_may_accept_a_subset_of_arguments(throwaway_plugin):
    mod = types.ModuleType("subset_plugin")

    @fuse.hookimpl
    def register_objectives():  # takes no arguments at all
        return None

    mod.register_objectives = register_objectives
    throwaway_plugin(mod)
    assert "infonce" in plugin_manager.registry("objective").names()


def _absolute_imports(path: Path) -> set[str]:
    """Absolute module names imported by a file of core/ (relative imports resolved)."""
    import importlib.util

    rel = path.relative_to(ROOT / "core").with_suffix("")
    parts = ["fuse", *rel.parts]
    package = ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_core_never_imports_plugins():
    offenders = {}
    for path in (ROOT / "core").rglob("*.py"):
        bad = {n for n in _absolute_imports(path) if n == "fuse.plugins" or n.startswith("fuse.plugins.")}
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def test_builtin_plugins_are_entry_points_not_imports():
    from importlib.metadata import entry_points

    eps = {ep.value for ep in entry_points(group="fuse")}
    assert {"fuse.plugins.timm_vision", "fuse.plugins.hf_text", "fuse.plugins.infonce"} <= eps
