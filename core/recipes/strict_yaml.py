"""YAML read as a recipe means it: a key given twice is an error (PyYAML keeps the last one silently,
so a second ``train:`` block would replace the first), and aliases may not expand a small file into
a huge structure (a "billion laughs" alias bomb grows to gigabytes once validated or dumped).

The node graph is composed first (aliases share nodes there, so it stays small), checked, and only
then turned into Python objects.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from fuse.base.errors import FuseError, RecipeError
from fuse.base.foreign import SMALL, read_text

# Nodes a document may expand to with every alias written out: a large recipe has a few thousand.
MAX_NODES = 200_000
MERGE = "tag:yaml.org,2002:merge"


class DuplicateKey(yaml.MarkedYAMLError):
    """A mapping gives the same key twice."""


class TooLarge(yaml.YAMLError):
    """Aliases expand the document beyond MAX_NODES."""


def _check_keys(node: yaml.MappingNode) -> None:
    seen: dict[tuple[str, str], yaml.Node] = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != MERGE:
            ident = (key.tag, key.value)
            if ident in seen:
                raise DuplicateKey(problem=f"key '{key.value}' is given twice (lines {seen[ident].start_mark.line + 1} "
                                           f"and {key.start_mark.line + 1}); give it once",
                                   problem_mark=key.start_mark)
            seen[ident] = key


def expanded_size(root: yaml.Node, limit: int = MAX_NODES) -> int:
    """How many nodes ``root`` stands for with aliases expanded (shared nodes counted once per use);
    stops counting past ``limit``. Also refuses duplicate keys in every mapping."""
    sizes: dict[int, int] = {}
    checked: set[int] = set()

    def size(node: yaml.Node, depth: int = 0) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > 200:
            raise TooLarge("nesting deeper than 200 levels")
        if isinstance(node, yaml.MappingNode) and id(node) not in checked:
            checked.add(id(node))
            _check_keys(node)
        children = ([n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > limit:
                break
        sizes[id(node)] = min(total, limit + 1)
        return sizes[id(node)]

    return size(root)


def load_strict(text: str, limit: int = MAX_NODES):
    """``yaml.safe_load`` that refuses duplicate keys and documents aliases expand beyond ``limit`` nodes."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node, limit) > limit:
            raise TooLarge(f"its aliases (&name / *name) expand it to more than {limit} values; write the "
                           "repeated parts out, or use fewer aliases")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_strict(text: str, where: str | Path, error: type[FuseError] = RecipeError):
    """``load_strict`` whose every refusal (invalid YAML, a duplicate key, an alias bomb, a ``!!python`` or other
    unknown tag) is one ``error`` line naming ``where``, with the line and column when YAML gives them."""
    try:
        return load_strict(text)
    except TooLarge as exc:
        raise error(f"{where}: refused: {exc}.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}: invalid YAML{at}: {' '.join(str(problem).split())}") from None


def read_yaml(path: str | Path, what: str, error: type[FuseError] = RecipeError, limit: int = SMALL):
    """A YAML file fuse did not write (a sweep file, another run's recipe.yaml): bounded and UTF-8
    (fuse.base.foreign), then strict (``parse_strict``)."""
    return parse_strict(read_text(path, what, limit, error), f"{what}: {path}", error)
