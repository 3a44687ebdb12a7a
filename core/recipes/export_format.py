"""The export format: what ``fuse_model.json`` says and how it is read back into tower specs.

Below the plan and the model on purpose: a recipe can bind new towers onto an existing export
(``base_model``), and loading a model rebuilds its towers from the same specs, so both read the
format here instead of reaching up into the exporter (``fuse.model.export`` writes it).
"""

from __future__ import annotations

import json
from pathlib import Path

from fuse.base.errors import ModelFileError, PluginError, RecipeError
from fuse.base.plugin_manager import registry
from fuse.recipes.spec import Spec, resolve_spec

FORMAT = "fuse-aligned-model"


FORMAT_VERSION = 2   # 1: two towers (fuse 0.1 before N modalities); 2: any number, plus the trained pairs


CONFIG = "fuse_model.json"


# Format 2 later gained optional fields that older fuse versions ignore: "files" (sizes and hashes),
# "tower" (a one-tower export) and "sentence_transformers"; exports without them still load.
PLOTS = ("metrics.png",)


def is_export(path: Path) -> bool:
    """Whether ``path`` holds a fuse export and nothing else (so replacing it loses nothing)."""
    try:
        config = json.loads((path / CONFIG).read_text())
        if config.get("format") != FORMAT:
            return False
        known = {CONFIG, "README.md", "fusion.safetensors", "modules.json", "config_sentence_transformers.json",
                 *PLOTS, *config.get("modalities", {})}
        return all(p.name in known for p in path.iterdir())
    except (OSError, ValueError, AttributeError):
        return False


def resolve_relative(options, base: Path):
    """Option strings saved as './x' (at any depth) are relative to the tower's folder."""
    if isinstance(options, dict):
        return {k: resolve_relative(v, base) for k, v in options.items()}
    if isinstance(options, list):
        return [resolve_relative(v, base) for v in options]
    if isinstance(options, str) and options.startswith("./"):
        return str(base / options[2:])
    return options


def confine(options, root: Path, base: Path, files: dict, where: str) -> None:
    """An export loads only files inside its folder that its ``files`` list names (and so hashes):
    an option that is a path (``./``, ``../``, ``/``, ``~``) must resolve inside ``root``, and each
    file it names (every file under it, for a folder) must be listed. One line naming the option."""
    if isinstance(options, dict):
        for k, v in options.items():
            confine(v, root, base, files, f"{where}.{k}")
        return
    if isinstance(options, list):
        for i, v in enumerate(options):
            confine(v, root, base, files, f"{where}.{i}")
        return
    if not isinstance(options, str) or not options.startswith(("./", "../", "/", "~", "\\")):
        return
    fix = "an export loads only files inside its folder that fuse_model.json lists; re-export the model."
    target = (base / options[2:]).resolve() if options.startswith("./") else None
    if target is None or not target.is_relative_to(root.resolve()):
        raise ModelFileError(f"{where}: '{options}' points outside the export {root}; {fix}")
    named = [p for p in ([target] if target.is_file() else sorted(target.rglob("*"))) if p.is_file()]
    for p in named:
        rel = p.relative_to(root.resolve()).as_posix()
        if files and rel not in files:
            raise ModelFileError(f"{where}: '{options}' names {rel}, which fuse_model.json's files list does not "
                                 f"record; {fix}")


def read_config(path: str | Path) -> tuple[Path, dict]:
    """(export dir, its fuse_model.json); a run dir stands for its export/."""
    path = Path(path)
    if (path / "export" / CONFIG).exists() and not (path / CONFIG).exists():
        path = path / "export"
    cfg_file = path / CONFIG
    if not cfg_file.exists():
        raise ModelFileError(f"{path} is not a fuse model: no {CONFIG}. Give an export dir (fuse export RUN OUT) "
                             f"or a run dir that has one.")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{cfg_file} is corrupt: {exc}") from None
    if config.get("format") != FORMAT:
        raise ModelFileError(f"{cfg_file} is not a {FORMAT} config.")
    if config.get("format_version", 1) > FORMAT_VERSION:
        raise ModelFileError(f"{cfg_file} was written by a newer fuse (format {config['format_version']}); "
                             "upgrade fuse-align to load it.")
    return path, config


def tower_specs(path: Path, config: dict) -> dict[str, tuple[Spec, Spec]]:
    """Each tower's encoder and head Spec from an export config (names resolved through the registry)."""
    cfg_file = path / CONFIG
    specs = {}
    for m, tower in config["modalities"].items():
        enc_cfg = tower["encoder"]
        try:
            registry("encoder").get(enc_cfg["name"])
        except RecipeError:
            raise PluginError(f"{cfg_file}: the {m} encoder needs plugin '{enc_cfg['name']}' from "
                              f"{enc_cfg.get('package', 'an uninstalled package')}; install it.") from None
        confine(enc_cfg["options"], path, path / m / "encoder", config.get("files") or {}, f"{cfg_file}:{m}.encoder")
        options = resolve_relative(enc_cfg["options"], path / m / "encoder")
        specs[m] = (resolve_spec("encoder", enc_cfg["name"], options, f"{cfg_file}:{m}.encoder"),
                    resolve_spec("head", tower["head"]["name"], tower["head"].get("options", {}), f"{cfg_file}:{m}.head"))
    return specs
