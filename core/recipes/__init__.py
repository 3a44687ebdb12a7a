"""Recipe → plan: the YAML schema and its overrides (``recipe``), registered components with
validated options (``spec``), the export format that specs are saved in (``export_format``), and
the plan a recipe resolves into once (``plan.load_plan``).

May import: ``fuse.base``.
"""
