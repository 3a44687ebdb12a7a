"""The plugin surface: built-in plugins use only `fuse.__all__`, never core internals or each other,
so a third-party package can do everything they do; the docs name only options that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import fuse
from fuse.base.plugin_manager import registries
from fuse.recipes.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"


def _plugin_of(path: Path) -> str:
    """A plugin is a top-level module of plugins/ or a package under it."""
    rel = path.relative_to(PLUGINS)
    return rel.parts[0].removesuffix(".py")


def _fuse_imports(path: Path):
    """(line, what) for every import of fuse that is not `import fuse` / `from fuse import <surface name>`."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fuse") and alias.name != "fuse":
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("fuse"):
            if node.module != "fuse":
                yield node.lineno, f"from {node.module} import ..."
            else:
                for alias in node.names:
                    if alias.name not in fuse.__all__:
                        yield node.lineno, f"from fuse import {alias.name} (not in fuse.__all__)"


@pytest.mark.parametrize("path", sorted(PLUGINS.rglob("*.py")), ids=lambda p: str(p.relative_to(PLUGINS)))
def test_built_in_plugins_import_only_the_surface(path):
    bad = [f"{path.name}:{line}: {what}" for line, what in _fuse_imports(path)]
    assert not bad, "plugins may use only names in fuse.__all__ (import fuse; fuse.X): " + "; ".join(bad)


def test_no_plugin_imports_another():
    for path in PLUGINS.rglob("*.py"):
        own = _plugin_of(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0 and node.level > len(path.relative_to(PLUGINS).parts) - 1:
                pytest.fail(f"{path}: relative import leaves its plugin package")
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name and name.startswith("fuse.plugins."):
                    assert name.split(".")[2] == own, f"{path}: plugin '{own}' imports plugin module {name}"


def test_fuse_train_and_load_stay_functions_after_their_modules_are_imported():
    import fuse.cli  # noqa: F401  (imports the loop module and the exporter)
    import fuse.model.export  # noqa: F401
    import fuse.training.loop  # noqa: F401

    assert callable(fuse.train) and fuse.train.__module__ == "fuse" and callable(fuse.load)


def test_surface_names_exist_and_have_docstrings():
    for name in fuse.__all__:
        obj = getattr(fuse, name)
        if callable(obj) and not name.endswith("Error"):
            assert (obj.__doc__ or "").strip(), f"fuse.{name} has no docstring saying why it exists"


def test_core_names_no_input_kind():
    """The engine decides nothing by a kind's name (zero-shot may look for a text tower: it needs one)."""
    for path in (ROOT / "core").rglob("*.py"):
        text = path.read_text()
        for pattern in (r'[!=]= "(image|text|audio|video)"', r'INPUT_KINDS', r'READERS'):
            for match in re.finditer(pattern, text):
                line = text[:match.start()].count("\n") + 1
                assert path.name == "run.py" and "text" in match.group(0), f"{path}:{line}: {match.group(0)}"


# -- the docs name only options that exist ---------------------------------------------------

def _schema_fields(model) -> set[str]:
    return set(model.model_fields)


def _docs_tables():
    """(doc, component name, options cell) for table rows whose first cell names a registered component."""
    names = {name: reg.entries[name] for reg in registries().values() for name in reg.entries}
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for line in doc.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3 and re.fullmatch(r"`[\w-]+`", cells[0]) and cells[0].strip("`") in names:
                yield doc.name, names[cells[0].strip("`")], cells[-1]


def test_option_names_in_docs_tables_exist_in_their_schema():
    rows = list(_docs_tables())
    assert rows, "no option tables found in docs/"
    for doc, entry, cell in rows:
        fields = _schema_fields(entry.options_schema)
        for token in re.findall(r"`([a-z][a-z0-9_]*)`", cell):
            if "_" in token or token in fields:
                assert token in fields, f"docs/{doc}: '{entry.name}' has no option '{token}' (it has: {sorted(fields)})"


def test_yaml_components_in_docs_validate():
    """Every `{name: X, options: {...}}` written in the docs validates against X's schema."""
    import yaml

    from fuse.base.plugin_manager import registry

    seen = 0
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for match in re.finditer(r"\{name: ([\w-]+), options: (\{[^{}]*\})", doc.read_text()):
            if match.group(2).replace(" ", "") == "{...}":
                continue  # a placeholder, not options
            name, options = match.group(1), yaml.safe_load(match.group(2))
            kinds = [k for k, reg in registries().items() if name in reg.entries]
            if not kinds or not isinstance(options, dict):
                continue
            schema = registry(kinds[0]).entries[name].options_schema
            unknown = set(options) - _schema_fields(schema)
            assert not unknown, f"docs/{doc.name}: {name} has no option(s) {sorted(unknown)}"
            seen += 1
    assert seen, "no `{name: X, options: {...}}` found in docs/"


def _recipe_paths(model, prefix="") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.add(path)
        ann = field.annotation
        for sub in getattr(ann, "__args__", ()) + (ann,):
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                out |= _recipe_paths(sub, path + ".")
    return out


def test_recipe_field_paths_in_docs_exist():
    """Dotted recipe paths the docs mention (`train.batch_size`, `data.pairs`) are fields of the schema."""
    paths = _recipe_paths(Recipe)
    sections = {p.split(".")[0] for p in paths if "." in p}
    for doc in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        for token in re.findall(r"`((?:%s)\.[a-z_]+(?:\.[a-z_]+)*)`" % "|".join(sorted(sections)), doc.read_text()):
            parts = token.split(".")
            if parts[0] == "modalities" or parts[-1] in ("jsonl", "json", "yaml", "md", "png", "py", "txt", "pt", "safetensors", "tar"):
                continue  # modalities.<name>.... (user-chosen names)
            assert token in paths or ".".join(parts[:2]) in paths, f"{doc.name}: `{token}` is not a recipe field"
