"""`python -m fuse ...` (what torchrun launches) is the `fuse` command."""

from fuse.cli import main

main()
