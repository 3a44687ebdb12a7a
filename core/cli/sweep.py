"""`fuse sweep RECIPE --grid key=v1,v2 ...`: train every point of a grid, one after another, and rank them."""

from __future__ import annotations

import click


@click.command("sweep")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--grid", "grid_items", multiple=True, metavar="KEY=V1,V2",
              help="A recipe field and its values (e.g. train.batch_size=128,256); repeatable: the product runs.")
@click.option("--config", "sweep_file", type=click.Path(dir_okay=False),
              help="A sweep YAML: {grid: {key: [values]}, samples: N, seed: S} (--grid adds to it).")
@click.option("--samples", type=int, help="Run this many points drawn at random from the product.")
@click.option("--seed", "sample_seed", type=int, default=None, help="Seed of the --samples draw (default 0).")
@click.option("--index", type=int, help="Run only point I (0-based; a SLURM array's $SLURM_ARRAY_TASK_ID).")
@click.option("--list", "list_only", is_flag=True, help="Print the points and their run folders, train nothing.")
@click.option("--log", "trackers", multiple=True, metavar="NAME", help="Also log every run to this tracker.")
def sweep_command(recipe, overrides, grid_items, sweep_file, samples, sample_seed, index, list_only, trackers):
    """Train RECIPE at every point of a grid into OUTPUT_DIR/NNN-<values>/, then write OUTPUT_DIR/sweep.{json,md,png}
    ranked by train.best_metric. Running it again skips finished points and resumes an interrupted one."""
    import json
    from pathlib import Path

    from fuse.base.errors import RecipeError
    from fuse.recipes.recipe import load_recipe
    from fuse.training.sweep import grid_points, parse_grid, ranked_table, read_sweep_file, run_points

    spec = read_sweep_file(sweep_file) if sweep_file else {"grid": {}}
    grid = {**spec["grid"], **parse_grid(list(grid_items))}
    if not grid:
        raise RecipeError("fuse sweep: give --grid key=v1,v2 (repeatable) or --config sweep.yaml with a grid.")
    overrides = list(overrides)
    base = load_recipe(recipe, overrides)
    if trackers:
        own = [e if isinstance(e, str) else e.model_dump() for e in base.logging]
        overrides.append(f"logging={json.dumps(own + [t for t in trackers if t not in own])}")
    points = grid_points(grid, samples if samples is not None else spec.get("samples"),
                         sample_seed if sample_seed is not None else spec.get("seed", 0))
    root = Path(base.output_dir)
    if list_only:
        for i, p in enumerate(points):
            click.echo(f"{i}\t{root / p.name}\t{' '.join(p.overrides())}")
        return
    done = run_points(recipe, overrides, points, root, index=index, echo=click.echo)
    rows = ranked_table(done, base.train.best_metric, root)
    click.echo((root / "sweep.md").read_text() if rows else "no finished point yet")
    click.echo(f"sweep: {len(done)} of {len(points)} points done; table in {root / 'sweep.md'}")
