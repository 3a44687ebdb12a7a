"""`fuse plugins`: every registered component, its kind, modalities and providing package."""

from __future__ import annotations

import json

import click


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--kind", type=click.Choice(["input", "encoder", "head", "fusion", "objective", "dataset", "logger"]), help="Only this kind.")
def plugins_command(as_json, kind):
    """List registered input kinds, encoders, heads, fusions, objectives, datasets and loggers (trackers)."""
    from fuse.base.plugin_manager import plugin_listing

    rows = [r for r in plugin_listing() if kind is None or r["kind"] == kind]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        mods = ",".join(r["modalities"]) or "-"
        click.echo(f"{r['kind']:<10} {r['name']:<{width}}  {mods:<14} {r['package']:<22} {r['description']}")
