"""A recipe resolved once: what training, caching, export and loading all work from.

Every component becomes a ``Spec`` (its registry entry and validated options, defaults filled)
when the recipe loads, so no later stage parses option dicts again. The plan also fixes which
pairs of modalities train, where each pair's data comes from, and what each objective needs;
every problem found on the way is collected into one error naming the recipe fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fuse.base.errors import FuseError, RecipeError
from fuse.recipes.recipe import Component, Recipe, Source, load_recipe
from fuse.recipes.spec import Spec, resolve_spec


@dataclass
class TowerPlan:
    """One modality: its encoder and head; a ``base`` tower comes frozen from ``base_model``."""

    modality: str
    encoder: Spec
    head: Spec
    frozen: bool = True
    trainable: list[str] | None = None
    base: bool = False

    @property
    def input_kinds(self) -> tuple[str, ...]:
        """The input kinds the tower's encoder declared when it registered (``modalities=``; the one
        declaration, checked against the registered kinds then: fuse.base.registry)."""
        from fuse.base.plugin_manager import registry

        return registry("encoder").get(self.encoder.name).modalities


@dataclass
class ObjectivePlan:
    """An objective as a run builds it: its key in checkpoints and metrics, spec, weight and pair."""
    key: str          # its name in checkpoints and metrics
    spec: Spec
    weight: float
    pair: tuple[str, str]


@dataclass
class PairPlan:
    """A pair of modalities that trains: where its records come from, its batch size and weight."""

    modalities: tuple[str, str]
    source: Source
    batch_size: int
    weight: float = 1.0

    @property
    def key(self) -> str:
        """The pair's name in logs and metrics, e.g. 'audio-text'."""
        return "-".join(self.modalities)


@dataclass
class ExtraPlan:
    """A named frozen encoder (e.g. a teacher) and the modality whose values it encodes."""
    name: str
    modality: str
    encoder: Spec


@dataclass
class Plan:
    """Everything a run needs from its recipe, resolved and checked once."""
    recipe: Recipe
    towers: dict[str, TowerPlan]
    fusion: Spec | None
    objectives: list[ObjectivePlan]
    pairs: list[PairPlan]
    extras: dict[str, ExtraPlan]
    eval_pairs: list[tuple[str, str]] = field(default_factory=list)
    base_model: Path | None = None


def _base_towers(recipe: Recipe, problems: list[str]) -> tuple[Path | None, dict[str, TowerPlan]]:
    if recipe.base_model is None:
        return None, {}
    from fuse.recipes.export_format import read_config, tower_specs

    try:
        path, config = read_config(recipe.base_model)
        towers = {m: TowerPlan(m, enc, head, frozen=True, base=True)
                  for m, (enc, head) in tower_specs(path, config).items()}
    except FuseError as exc:
        problems.append(f"base_model: {exc}")
        return None, {}
    if config.get("fusion"):
        problems.append(f"base_model: {recipe.base_model} has a shared fusion module, which a new tower cannot join "
                        "frozen; train all towers together instead")
    return path, towers


def resolve(recipe: Recipe, file: str = "recipe") -> Plan:
    """Resolve every component, pair and data source of ``recipe``; all problems in one RecipeError."""
    problems: list[str] = []

    def spec(kind: str, comp: Component, where: str) -> Spec | None:
        """A component's Spec, or None with its problem recorded."""
        try:
            return resolve_spec(kind, comp.name, comp.options, where)
        except FuseError as exc:
            problems.append(str(exc))
            return None

    base_path, towers = _base_towers(recipe, problems)
    for m, ms in recipe.modalities.items():
        if m in towers:
            problems.append(f"modalities.{m}: '{m}' is already a tower of base_model {recipe.base_model} (it joins "
                            "frozen from there); remove it from modalities or give it another name")
            continue
        enc, head = spec("encoder", ms.encoder, f"modalities.{m}.encoder"), spec("head", ms.head, f"modalities.{m}.head")
        if enc and head:
            towers[m] = TowerPlan(m, enc, head, ms.encoder.frozen, ms.encoder.trainable)
    ordered = list(dict.fromkeys([*towers, *recipe.modalities]))  # base towers first, then the recipe's
    names = set(ordered)
    if len(names) < 2:
        problems.append(f"modalities: at least two are aligned, got {len(names)}: {', '.join(names) or 'none'}")

    fusion = spec("fusion", recipe.fusion, "fusion") if recipe.fusion is not None else None
    if fusion is not None:
        from fuse.base.interfaces import Encoder

        for m, t in towers.items():
            if t.encoder.cls.forward_tokens is Encoder.forward_tokens:
                problems.append(f"modalities.{m}.encoder: '{t.encoder.name}' gives only pooled latents, but fusion "
                                f"'{fusion.name}' needs token sequences; pick an encoder with forward_tokens or "
                                "remove the fusion section")

    extras = {}
    for name, ex in recipe.extras.items():
        where = f"extras.{name}" if recipe.teacher is None or name != "teacher" else "teacher"
        enc = spec("encoder", ex.encoder, f"{where}.encoder")
        if ex.modality not in names:
            problems.append(f"{where}.modality: '{ex.modality}' is not one of the recipe's modalities "
                            f"({', '.join(sorted(names))})")
        elif enc is not None and ex.modality in towers:
            from fuse.base.plugin_manager import registry

            theirs, ours = towers[ex.modality].input_kinds, registry("encoder").get(enc.name).modalities
            if theirs and ours and not set(theirs) & set(ours):
                problems.append(f"{where}.encoder: '{enc.name}' consumes {'/'.join(ours)} but the {ex.modality} "
                                f"tower's encoder '{towers[ex.modality].encoder.name}' consumes {'/'.join(theirs)}; "
                                "pick an encoder for the same input kind")
        if enc is not None:
            extras[name] = ExtraPlan(name, ex.modality, enc)

    objectives, pairs = _objectives(recipe, ordered, extras, fusion, spec, problems)
    _pair_sources(recipe, pairs, problems, spec)
    _check_connected(names, [p.modalities for p in pairs], set(towers) - set(recipe.modalities), problems)
    if isinstance(recipe.train.epoch, tuple) and not any(set(p.modalities) == set(recipe.train.epoch) for p in pairs):
        problems.append(f"train.epoch: {list(recipe.train.epoch)} is not a pair any objective trains "
                        f"({', '.join(p.key for p in pairs) or 'none'}); use largest, smallest or one of those")
    for i, pair in enumerate(recipe.eval.pairs):
        unknown = [m for m in pair if m not in names]
        if unknown or pair[0] == pair[1]:
            problems.append(f"eval.pairs.{i}: {list(pair)} must name two different modalities of the recipe "
                            f"({', '.join(sorted(names))})")
        elif not recipe.data.given:
            problems.append(f"eval.pairs.{i}: extra pairs are evaluated on data's val split; give data.dataset or "
                            "data.train/data.val")
    _check_best_metric(recipe, [p.modalities for p in pairs] + [tuple(p) for p in recipe.eval.pairs], problems)
    if problems:
        raise RecipeError(f"{file}: " + "; ".join(problems))
    return Plan(recipe, towers, fusion, objectives, pairs, extras, [tuple(p) for p in recipe.eval.pairs], base_path)


def val_metric_names(pairs: list[tuple[str, str]], ks) -> list[str]:
    """Every key validation can report for these pairs and ranks (what train.best_metric may name)."""
    names = [f"mean/R@{k}" for k in ks]
    for a, b in pairs:
        names += [f"{a}-{b}/mean/R@{k}" for k in ks]
        for x, y in ((a, b), (b, a)):
            names += [f"{x}_to_{y}/R@{k}" for k in ks] + [f"{x}_to_{y}/mean_rank", f"{x}_to_{y}/median_rank"]
    return names


def _check_best_metric(recipe: Recipe, pairs: list[tuple[str, str]], problems: list[str]) -> None:
    """train.best_metric must be a key validation reports, checked now rather than after an epoch."""
    if not pairs:
        return
    names = val_metric_names(pairs, recipe.eval.ks)
    if recipe.train.best_metric not in names:
        shown = [n for n in names if "/R@" in n][:8]
        problems.append(f"train.best_metric: '{recipe.train.best_metric}' is not a validation metric of this recipe; "
                        f"use one of {', '.join(shown)}, ... (K from eval.ks {list(recipe.eval.ks)})")


def _objectives(recipe, ordered, extras, fusion, spec, problems):
    """Each objective's spec and pair (the recipe's two modalities when it names none); the pairs that train."""
    objectives, pairs, seen = [], [], {}
    names = set(ordered)
    for i, obj in enumerate(recipe.objectives):
        where = f"objectives.{i}"
        s = spec("objective", obj, where)
        if obj.pair is None:
            if len(names) != 2:
                problems.append(f"{where}.pair: name the two modalities it aligns (e.g. pair: [{', '.join(sorted(names)[:2])}]); "
                                f"the recipe has {len(names)}: {', '.join(sorted(names))}")
                continue
            pair = tuple(ordered)
        else:
            pair = tuple(obj.pair)
            unknown = [m for m in pair if m not in names]
            if unknown:
                problems.append(f"{where}.pair: '{unknown[0]}' is not a modality of the recipe "
                                f"({', '.join(sorted(names))}); add it under modalities or fix the pair")
                continue
            if pair[0] == pair[1]:
                problems.append(f"{where}.pair: a pair needs two different modalities, got {list(pair)}")
                continue
        if s is None:
            continue
        cls = s.cls
        if fusion is not None and getattr(cls, "pooled_latents_only", False):
            problems.append(f"{where} ({obj.name}) works on pooled latents, but fusion '{fusion.name}' hands it token "
                            "sequences; remove one of the two")
        for need in sorted(getattr(cls, "requires", ())):
            if need not in extras:
                problems.append(f"{where} ({obj.name}) needs '{need}', but the recipe has no `extras: {{{need}: ...}}` "
                                f"(or `{need}:`) section; add one, e.g. {need}: {{modality: image, encoder: {{name: timm, "
                                "options: {...}}}}")
            elif extras[need].modality not in pair:
                problems.append(f"{where} ({obj.name}) acts on {list(pair)} but its '{need}' encodes "
                                f"{extras[need].modality}; set its pair to include {extras[need].modality}")
        key_pair = frozenset(pair)
        if key_pair not in seen:
            seen[key_pair] = pair
            pairs.append(PairPlan(pair, recipe.data, recipe.train.batch_size))
        objectives.append(ObjectivePlan("", s, obj.weight, pair))
    # Keys: the objective's name (as single-pair runs always had), qualified by its pair when several train.
    for i, o in enumerate(objectives):
        base = o.spec.name if len(pairs) == 1 else f"{'-'.join(o.pair)}:{o.spec.name}"
        o.key = base if base not in {x.key for x in objectives[:i]} else f"{base}_{i}"
    return objectives, pairs


def _pair_sources(recipe: Recipe, pairs: list[PairPlan], problems: list[str], spec) -> None:
    """Attach each pair's data source, batch size and weight (data.pairs entries override data)."""
    by_set = {frozenset(p.modalities): p for p in pairs}
    matched = set()
    for i, entry in enumerate(recipe.data.pairs):
        key = frozenset(entry.modalities)
        if key not in by_set:
            problems.append(f"data.pairs.{i}: no objective acts on {list(entry.modalities)} (trained pairs: "
                            f"{', '.join(p.key for p in pairs) or 'none'}); add an objective with that pair or "
                            "remove the entry")
            continue
        if key in matched:
            problems.append(f"data.pairs.{i}: {list(entry.modalities)} is listed twice")
            continue
        matched.add(key)
        pair = by_set[key]
        if entry.given:
            pair.source = entry
        elif entry.train_split != "train" or entry.val_split != "val":
            pair.source = recipe.data.model_copy(update={"train_split": entry.train_split, "val_split": entry.val_split})
        pair.batch_size = entry.batch_size or recipe.train.batch_size
        pair.weight = entry.weight
        if entry.dataset is not None:
            spec("dataset", entry.dataset, f"data.pairs.{i}.dataset")
    if recipe.data.dataset is not None:
        spec("dataset", recipe.data.dataset, "data.dataset")
    for pair in pairs:
        if not pair.source.given:
            problems.append(f"data: pair {list(pair.modalities)} has no data; give data.dataset (a registered "
                            "dataset) or data.train (a manifest path), or a source for it in data.pairs")


def _check_connected(names: set[str], pairs: list[tuple[str, str]], joined: set[str], problems: list[str]) -> None:
    """Every modality must reach every other through trained pairs (a base model's towers already do)."""
    parent = {m: m for m in names}

    def find(m):
        """The representative of a modality's connected group."""
        while parent[m] != m:
            m = parent[m]
        return m

    for a, b in pairs + [(x, y) for x in joined for y in joined]:
        if a in parent and b in parent:
            parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for m in sorted(names):
        groups.setdefault(find(m), []).append(m)
    if len(groups) > 1:
        parts = " | ".join(", ".join(g) for g in sorted(groups.values(), key=len, reverse=True))
        problems.append(f"objectives: the trained pairs leave the modalities unconnected ({parts}), so there is no "
                        "one shared space; add an objective whose pair joins them")


def load_plan(path: str | Path, overrides: list[str] = ()) -> Plan:
    """Read a recipe file (with ``key.sub=value`` overrides) and resolve it: the one entry point every
    command uses, so a recipe is validated and resolved exactly once and later stages receive the plan."""
    return resolve(load_recipe(path, overrides), str(path))
