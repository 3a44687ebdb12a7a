"""The `fuse` command line. One module per command; plugins may add commands.

User errors (FuseError, and file-system errors such as a full disk) print as one line and exit with code 2; `fuse --debug ...` shows the
traceback instead.
"""

from __future__ import annotations

import sys

import click

from fuse.api.errors import FuseError


class FuseGroup(click.Group):
    """The `fuse` click group: user errors become one line and exit code 2 instead of a traceback."""

    def invoke(self, ctx):
        """Run the command; a FuseError prints as `error: ...` (exit 2) unless --debug asks for the trace."""
        try:
            return super().invoke(ctx)
        except (FuseError, OSError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, OSError):  # the file system refused: name the path and the fix
                from fuse.api.atomic import storage_error

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


def _add_commands() -> None:
    from fuse.cli.curate import curate_command
    from fuse.cli.data import data_group
    from fuse.cli.embed import embed_command
    from fuse.cli.eval import eval_command
    from fuse.cli.export import export_command
    from fuse.cli.plot import plot_command
    from fuse.cli.plugins import plugins_command
    from fuse.cli.report import report_command
    from fuse.cli.search import search_command
    from fuse.cli.select import select_command
    from fuse.cli.sweep import sweep_command
    from fuse.cli.train import train_command

    for cmd in (train_command, export_command, plugins_command, data_group, eval_command, plot_command,
                embed_command, search_command, select_command, curate_command, sweep_command,
                report_command):
        cli.add_command(cmd)
    from fuse.api.plugin_manager import plugin_manager

    plugin_manager().hook.register_commands(cli=cli)


_add_commands()


def main():
    """Console-script entry point of `fuse`."""
    cli()
