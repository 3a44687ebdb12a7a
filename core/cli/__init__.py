"""The `fuse` command line. One module per command; plugins may add commands.

Start-up is kept to click and this package: each command module imports only click at the top and
its heavy modules (torch, the training loop) inside the command function, and plugins load only
when a command needs them. Plugin commands (hook ``register_commands``) are asked for when a name
is not built-in, and by `fuse --help` only when a plugin other than fuse's own is installed or
registered in-process (the built-in plugins add no commands; tests/test_cli_start.py checks both).

User errors (FuseError, and file-system errors such as a full disk) print as one line and exit with code 2; `fuse --debug ...` shows the
traceback instead.
"""

from __future__ import annotations

import importlib
import sys

import click

from fuse.base.errors import FuseError


# command name -> "module:attribute"; imported when the command is named or listed.
BUILT_IN = {
    "curate": "fuse.cli.curate:curate_command",
    "data": "fuse.cli.data:data_group",
    "embed": "fuse.cli.embed:embed_command",
    "eval": "fuse.cli.eval:eval_command",
    "export": "fuse.cli.export:export_command",
    "plot": "fuse.cli.plot:plot_command",
    "plugins": "fuse.cli.plugins:plugins_command",
    "report": "fuse.cli.report:report_command",
    "search": "fuse.cli.search:search_command",
    "select": "fuse.cli.select:select_command",
    "sweep": "fuse.cli.sweep:sweep_command",
    "train": "fuse.cli.train:train_command",
}


def plugin_commands(listing: bool = False) -> dict[str, click.Command]:
    """Commands plugins add through ``register_commands``, collected on a scratch group.

    For a listing (``fuse --help``, shell completion) plugins are loaded only if one that is not
    fuse's own could add a command, so the built-in case stays free of torch.
    """
    from fuse.base import plugin_manager as plugins

    if listing and not plugins.foreign_plugins():
        return {}
    scratch = click.Group()
    plugins.plugin_manager().hook.register_commands(cli=scratch)
    clash = sorted(set(scratch.commands) & set(BUILT_IN))
    if clash:
        from fuse.base.errors import PluginError

        raise PluginError(f"a plugin adds the command '{clash[0]}', which is built into fuse; "
                          "rename the plugin's command (`fuse plugins` lists the installed plugins).")
    return scratch.commands


class FuseGroup(click.Group):
    """The `fuse` click group: commands load on first use; user errors become one line and exit code 2
    instead of a traceback."""

    def list_commands(self, ctx):
        """Built-in commands, plus plugin commands when a non-built-in plugin is present (a plugin that
        fails to load is one line here too: `--help` runs before invoke)."""
        try:
            plugins = plugin_commands(listing=True)
        except FuseError as exc:
            _fail(ctx, exc)
        return sorted(set(BUILT_IN) | set(self.commands) | set(plugins))

    def get_command(self, ctx, name):
        """Import a built-in command's module on first use; any other name is asked of the plugins."""
        if name in BUILT_IN:
            module, attribute = BUILT_IN[name].split(":")
            return getattr(importlib.import_module(module), attribute)
        if name in self.commands:
            return self.commands[name]
        return plugin_commands().get(name)

    def invoke(self, ctx):
        """Run the command; a FuseError prints as `error: ...` (exit 2) unless --debug asks for the trace."""
        try:
            return super().invoke(ctx)
        except (FuseError, OSError) as exc:
            _fail(ctx, exc)


def _fail(ctx, exc: Exception):
    """Print a user error as `error: ...` and exit 2, unless --debug asks for the traceback."""
    if ctx.obj and ctx.obj.get("debug"):
        raise exc
    if isinstance(exc, OSError):  # the file system refused: name the path and the fix
        from fuse.base.atomic import storage_error

        exc = storage_error(exc)
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@click.group(cls=FuseGroup)
@click.version_option(package_name="fuse-align")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx, debug):
    """Align pretrained unimodal encoders into a multimodal model."""
    ctx.obj = {"debug": debug}


def main():
    """Console-script entry point of `fuse`."""
    cli()
