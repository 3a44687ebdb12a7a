"""Training: the loop (``loop``, read it in one sitting) and the small helpers it calls — the step,
batches, precision, optimiser, distribution (DDP, FSDP), GradCache, checkpoints, resume,
preemption, divergence checks, freezing, metrics, the run folder and ``--dry-run``.

May import: every package below it (``fuse.base``, ``fuse.recipes``, ``fuse.data``, ``fuse.eval``,
``fuse.model.aligned``); only the CLI and the ``fuse`` facade import it.
"""
