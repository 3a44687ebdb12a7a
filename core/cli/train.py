"""`fuse train RECIPE [key.sub=value ...]`: run a recipe end to end."""

from __future__ import annotations

import json

import click


@click.command("train")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Resolve every plugin and option and check that data and local model files exist, "
              "then stop (loads and downloads nothing).")
@click.option("--resume", is_flag=True, help="Continue the run in output_dir from its last checkpoint "
              "(give the same recipe; train.epochs may be raised).")
@click.option("--overwrite", is_flag=True, help="Start afresh in an output_dir that holds an earlier run: it is moved "
              "aside to OUTPUT_DIR.old-<time> first (nothing is deleted).")
@click.option("--tracker", "--log", "trackers", multiple=True, metavar="NAME",
              help="Also send metrics to this tracker (tensorboard, wandb, mlflow; see `fuse plugins --kind tracker`); "
              "repeatable. --log is its old name.")
@click.option("--allow-pipe", is_flag=True, help="Let the recipe file's own pipe:CMD shard entries run their "
              "commands (a pipe: entry given as an override on this command line always may).")
@click.option("--seeds", help="Comma-separated seeds (0,1,2): one run per seed in OUTPUT_DIR/seed-N and a "
              "mean ± std table of every validation metric.")
def train_command(recipe, overrides, dry_run, resume, overwrite, trackers, seeds, allow_pipe):
    """Train the heads of RECIPE; overrides look like train.epochs=3 or output_dir=runs/x."""
    from fuse.recipes.plan import load_plan
    from fuse.training.trackers import check_trackers

    if resume and overwrite:
        raise click.UsageError("--resume continues the run in output_dir and --overwrite moves it aside; give one.")
    # added to the recipe's own list by one more override (it travels to each seed and into the resume hint)
    overrides = list(overrides) + ([f"trackers+={json.dumps(list(trackers))}"] if trackers else [])
    if seeds is not None:
        from fuse.training.sweep import run_seeds

        run_seeds(recipe, overrides, seeds, echo=click.echo)  # finished seeds skip, others resume
        return
    plan = load_plan(recipe, overrides, allow_pipe)
    check_trackers(plan.recipe)  # a missing tracker extra is one line before any data is read
    if dry_run:
        from fuse.training.dryrun import check_files, dry_run_report, summary

        checked = check_files(plan)  # a missing file: one error line, exit 2
        click.echo(json.dumps(dry_run_report(plan), indent=2))
        click.echo(summary(*checked), err=True)
        return
    import signal
    import sys

    from fuse.training.loop import train
    from fuse.training.preempt import EXIT_CODE, Preempted

    def on_term(signum, frame):
        raise KeyboardInterrupt  # SIGTERM (a scheduler's kill) ends like Ctrl-C, with the resume hint

    previous = signal.signal(signal.SIGTERM, on_term)
    resume_hint = f"fuse train {recipe}{''.join(' ' + o for o in overrides)} --resume"
    try:
        train(plan, resume=resume, overwrite=overwrite)
    except Preempted as stop:  # SIGTERM during the steps: a checkpoint was written, the run ends cleanly
        if stop.main:  # once, not once per rank
            click.echo(f"\n{stop}; continue with {resume_hint}", err=True)
        sys.exit(EXIT_CODE)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: {plan.recipe.output_dir} keeps its last checkpoint; continue with {resume_hint}", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
