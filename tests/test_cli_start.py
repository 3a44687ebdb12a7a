"""The CLI starts at once: `import fuse` and `import fuse.cli` load neither torch, the training loop
nor any plugin; built-in commands load on first use and plugin commands only when a plugin could add one."""

from __future__ import annotations

import subprocess
import sys
import types

import click
from click.testing import CliRunner

import fuse
from fuse.cli import BUILT_IN, cli, plugin_commands


def test_importing_fuse_and_its_cli_loads_no_torch_loop_or_plugin():
    probe = ("import sys, fuse, fuse.cli; heavy = sorted(m for m in sys.modules if m == 'torch' "
             "or m == 'fuse.training.loop' or m.startswith('fuse.plugins')); print(heavy)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_surface_names_resolve_on_first_use():
    code = ("import sys, fuse; assert 'torch' not in sys.modules; from fuse import Encoder; "
            "assert 'torch' in sys.modules and Encoder is fuse.Encoder; "
            "assert set(fuse.__all__) <= set(dir(fuse)); [getattr(fuse, n) for n in fuse.__all__]")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert callable(fuse.train) and callable(fuse.load)  # functions, not the modules they call


def test_help_lists_every_built_in_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(BUILT_IN) == {"curate", "data", "embed", "eval", "export", "plot", "plugins", "report",
                                       "search", "select", "serve", "sweep", "train"}


def test_built_in_plugins_add_no_commands():
    assert plugin_commands() == {}  # so `fuse --help` may skip loading them


def _command_plugin(name: str) -> types.ModuleType:
    """An in-process plugin adding one command called ``name``."""
    module = types.ModuleType(f"command_plugin_{name}")

    @click.command(name)
    def hello():
        """Say hello from a plugin."""
        click.echo("hello from a plugin")

    @fuse.hookimpl
    def register_commands(cli):
        cli.add_command(hello)

    module.register_commands = register_commands
    return module


def test_a_plugin_command_is_listed_and_runs():
    plugin = _command_plugin("hello")
    fuse.register_plugin(plugin)
    try:
        runner = CliRunner()
        assert "Say hello from a plugin." in runner.invoke(cli, ["--help"]).output
        result = runner.invoke(cli, ["hello"])
        assert result.exit_code == 0 and result.output == "hello from a plugin\n", result.output
    finally:
        fuse.unregister_plugin(plugin)
    assert CliRunner().invoke(cli, ["hello"]).exit_code != 0


def test_a_plugin_command_may_not_shadow_a_built_in():
    plugin = _command_plugin("train")
    fuse.register_plugin(plugin)
    try:
        results = [CliRunner().invoke(cli, args) for args in (["nosuch"], ["--help"])]
    finally:
        fuse.unregister_plugin(plugin)
    for result in results:  # running an unknown name and listing (before invoke) alike
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: a plugin adds the command 'train', which is built into fuse; rename")
        assert len(result.output.strip().splitlines()) == 1
