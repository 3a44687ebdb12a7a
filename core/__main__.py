"""`python -m fuse ...` (what torchrun launches) is the `fuse` command."""

from .cli import main

main()
