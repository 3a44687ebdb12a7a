"""fuse's built-in plugins. Each module registers through the `fuse` entry-point group,
exactly like a third-party plugin package; core never imports from here."""
