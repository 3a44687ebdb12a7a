"""`fuse export RUN_DIR OUT_DIR [--tower text]`: write a run's aligned model (encoders + heads), or one tower, as
safetensors with a model card; `fuse export SOURCE OUT_DIR` does the same for a reference model
(open_clip:ARCH@TAG, hf:MODEL)."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("run_dir", metavar="RUN_DIR|SOURCE", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path())  # checked by export_run: one line
@click.option("--checkpoint", default="best", show_default=True,
              help="Which checkpoint of the run: best, or a kept epoch file such as epoch-003 (train.keep_checkpoints).")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it holds a previous fuse export (never anything else).")
@click.option("--tower", help="Export only this tower (encoder + head), e.g. text; a transformers text tower also "
              "loads in sentence-transformers. Not for models whose towers share a fusion block.")
def export_command(run_dir, out_dir, checkpoint, force, tower):
    """Rebuild the run's model from its recipe.yaml, load a checkpoint, export it to OUT_DIR; or export the
    reference model SOURCE (open_clip:ARCH@PRETRAINED, hf:MODEL_ID_OR_DIR) with its weights inside OUT_DIR.

    OUT_DIR must be new, empty, or (with --force) a previous export; it is written atomically."""
    from fuse.base.errors import FuseError
    from fuse.model.export import export_reference, export_run
    from fuse.model.reference import is_reference

    if is_reference(run_dir):
        if checkpoint != "best":
            raise FuseError(f"--checkpoint is for run dirs; {run_dir} is a reference model, exported as published.")
        out = export_reference(run_dir, out_dir, force=force, tower=tower)
    else:
        out = export_run(run_dir, out_dir, checkpoint, force=force, tower=tower)
    click.echo(f"exported to {out}")
