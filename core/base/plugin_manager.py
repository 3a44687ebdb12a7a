"""The one pluggy manager and the registries it fills.

Plugins (built-in and third-party alike) are modules named by entry points in the group
`fuse`. Each hook implementation is called separately so every registered name records the
distribution that provided it (for `fuse plugins` and duplicate-name errors).
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
from typing import TYPE_CHECKING

import pluggy

from fuse.base import hookspecs
from fuse.base.errors import PluginError

if TYPE_CHECKING:  # the registry pulls in pydantic; `fuse --help` asks foreign_plugins() without it
    from fuse.base.registry import Registry

KINDS = ("input", "encoder", "head", "fusion", "objective", "dataset", "logger")
_HOOK_OF_KIND = {
    "input": "register_input_kinds",
    "encoder": "register_encoders",
    "head": "register_heads",
    "fusion": "register_fusions",
    "objective": "register_objectives",
    "dataset": "register_datasets",
    "logger": "register_loggers",
}

_pm: pluggy.PluginManager | None = None
_registries: dict[str, Registry] | None = None
_packages: dict[int, str] = {}   # id(plugin module) -> "distribution version"


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with entry points of group `fuse` loaded once.

    Entry points come from ``importlib.metadata.entry_points``, which sees each distribution once
    (the first on sys.path): a second, stale copy of a package cannot register old module names.
    """
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("fuse")
        pm.add_hookspecs(hookspecs)
        for ep in importlib.metadata.entry_points(group="fuse"):
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not hide which one it is
                package = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.value
                raise PluginError(f"Loading fuse plugin '{ep.name}' ({ep.value}) from {package} failed: {exc!r}. "
                                  "Reinstall or uninstall that package (pip list shows it).") from exc
            pm.register(plugin, name=ep.name)
            if ep.dist is not None:
                _packages[id(plugin)] = f"{ep.dist.name} {ep.dist.version}"
        _pm = pm
    return _pm


def foreign_plugins() -> bool:
    """Whether a plugin other than fuse's built-in ones may be present: plugins are loaded already
    (in-process ones register through them), or an entry point of group `fuse` comes from another
    distribution. Read from metadata alone, so `fuse --help` can skip loading plugins (and torch)."""
    if _pm is not None:
        return True
    own = importlib.metadata.distribution("fuse-align").name
    return any(ep.dist is None or ep.dist.name != own for ep in importlib.metadata.entry_points(group="fuse"))


def reset() -> None:
    """Forget the registries so they are rebuilt (after registering or removing a plugin)."""
    global _registries
    _registries = None


def register_plugin(module, name: str | None = None) -> None:
    """Register an in-process plugin module (tests, notebooks). Entry points are the normal way."""
    plugin_manager().register(module, name=name)
    reset()


def unregister_plugin(module) -> None:
    """Remove a plugin registered with ``register_plugin`` (a test's cleanup), rebuilding the registries."""
    plugin_manager().unregister(module)
    reset()


def _package_of(pm: pluggy.PluginManager) -> dict[int, str]:
    """id(plugin) -> the distribution that provided it (in-process plugins have none)."""
    return dict(_packages)


def registries() -> dict[str, Registry]:
    """kind -> Registry, built from every registered plugin's register_* hooks."""
    global _registries
    if _registries is None:
        from fuse.base.registry import Registry

        pm = plugin_manager()
        packages = _package_of(pm)
        regs = {kind: Registry(kind) for kind in KINDS}
        regs["encoder"].inputs = regs["input"]  # filled first (KINDS order): encoders' declared kinds are checked
        for kind, hook_name in _HOOK_OF_KIND.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                package = packages.get(id(impl.plugin), impl.plugin_name)
                register = functools.partial(regs[kind].register, package=package)
                kwargs = {"register": register}
                accepted = set(inspect.signature(impl.function).parameters)
                impl.function(**{k: v for k, v in kwargs.items() if k in accepted})
        _registries = regs
    return _registries


def registry(kind: str) -> Registry:
    """The registry of one kind (input, encoder, head, fusion, objective, dataset, logger)."""
    return registries()[kind]


def plugin_listing() -> list[dict]:
    """Every registered component, for `fuse plugins`."""
    rows = []
    for kind, reg in registries().items():
        for name in reg.names():
            e = reg.entries[name]
            row = {"kind": kind, "name": name, "modalities": list(e.modalities),
                   "package": e.package, "description": e.description}
            if kind == "input":
                row["files"] = bool(e.cls.files)  # values are file paths (or written inline)
            rows.append(row)
    return rows


def installed_version() -> str:
    """fuse-align's installed version, recorded in exports."""
    try:
        return importlib.metadata.version("fuse-align")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
