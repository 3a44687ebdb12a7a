"""The README.md model card of an export: what it is, how it was trained, how well it does, and its limits.

Everything comes from the export config (fuse_model.json) and its ``card`` entry, which the exporter
fills from the run: the recipe file, the before/after validation metrics (eval.json) and the plots.
"""

from __future__ import annotations

import yaml

from fuse.recipes.strict_yaml import load_strict


def _data_lines(recipe: dict) -> list[str]:
    data = recipe.get("data") or {}
    if (data.get("dataset") or {}).get("name"):
        ds = data["dataset"]
        opts = ", ".join(f"{k}={v}" for k, v in (ds.get("options") or {}).items())
        return [f"Dataset `{ds['name']}`" + (f" ({opts})" if opts else "") + ", built by `fuse data build "
                f"{ds['name']}`; its folder holds the data's licences (LICENSES.md)."]
    lines = [f"{split}: `{data[split]}`" for split in ("train", "val") if data.get(split)]
    return ["Manifests: " + "; ".join(lines) + "."] if lines else []


def _metrics_table(metrics: dict, tower: str | None) -> list[str]:
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    keys = [k for k in (after or before) if "R@" in k or "rank" in k]
    if not keys:
        return []
    lines = ["## Validation retrieval", "",
             "Before: the same encoders with untrained heads; after: the exported heads"
             + (f" (best epoch {metrics['best_epoch']})" if metrics.get("best_epoch") is not None else "") + "."
             + (f" Measured with the whole model this {tower} tower was exported from." if tower else ""), "",
             "| metric | before | after |", "|---|---|---|"]
    fmt = lambda d, k: f"{d[k]:.2f}" if isinstance(d.get(k), (int, float)) else "-"  # noqa: E731
    return lines + [f"| {k} | {fmt(before, k)} | {fmt(after, k)} |" for k in keys] + [""]


def model_card(config: dict) -> str:
    """The export's README.md: usage, towers with sources and licences, recipe, data, metrics, plots, limits."""
    towers = config["modalities"]
    card = config.get("card") or {}
    first = next(iter(towers))
    one = config.get("tower")
    lines = ["# fuse aligned model" + (f": the {one} tower alone" if one else ""), "",
             f"Aligned with fuse {config['fuse_version']}; shared embedding size {config['embed_dim']}.", "",
             "```python", "import fuse", "model = fuse.load('PATH')",
             f"z = model.embed('{first}', [...])  # L2-normalised", "```", ""]
    if config.get("sentence_transformers"):
        lines += ["It also loads with sentence-transformers (the head's class comes from the installed fuse-align; "
                  "this folder holds no code):", "", "```python", "from sentence_transformers import SentenceTransformer",
                  "model = SentenceTransformer('PATH', trust_remote_code=True)  # imports fuse.model.sentence_transformers.FuseHead",
                  "z = model.encode([...])", "```", ""]
    lines += ["## Towers", "", "| modality | encoder plugin | source | licence | latent dim | head |",
              "|---|---|---|---|---|---|"]
    for m, t in towers.items():
        info = t["encoder"]["info"]
        lines.append(f"| {m} | {t['encoder']['name']} ({t['encoder']['package']}) | {info.get('source', '')} | "
                     f"{info.get('license', '') or 'see source'} | {info['dim']} | {t['head']['name']} |")
    lines += ["", "Each encoder keeps its own licence (see its source).", ""]
    if card.get("reference"):
        lines += [f"The reference model `{card['reference']}` as published: each tower with its own projection and "
                  "preprocessing, identity heads, nothing trained.", ""]
    if config.get("fusion"):
        lines += [f"The towers share a `{config['fusion']['name']}` fusion block after their heads.", ""]
    recipe_text = card.get("recipe_text")
    try:
        recipe = load_strict(recipe_text) if recipe_text else {}
    except yaml.YAMLError:
        recipe = {}  # the card still shows the text; only the data section needs it parsed
    data = _data_lines(recipe if isinstance(recipe, dict) else {})
    if data:
        lines += ["## Data", "", *data, ""]
    if config.get("pairs"):
        lines += ["Trained pairs: " + ", ".join("-".join(p) for p in config["pairs"]) + ".", ""]
    lines += _metrics_table(card.get("metrics") or {}, one)
    if card.get("plots"):
        lines += ["## Training curves", "", *[f"![{p}]({p})" for p in card["plots"]], ""]
    if recipe_text:
        lines += ["## Recipe", "", f"`{card.get('recipe', 'recipe.yaml')}`"
                  + (f", checkpoint `{card['checkpoint']}`" if card.get("checkpoint") else "") + ":", "",
                  "```yaml", recipe_text.rstrip(), "```", ""]
    elif card.get("recipe"):
        lines += [f"Trained with recipe `{card['recipe']}`.", ""]
    lines += ["## Intended use and limits", "",
              "- Embeds " + " and ".join(towers) + " into one space for retrieval, search, clustering and linear "
              "probes; compare embeddings only with embeddings from this same export.",
              "- The heads learnt from the data above only: expect the numbers above on data like it, and measure "
              "before relying on it elsewhere (`fuse eval`).",
              "- The pretrained encoders bring their own training data, biases and licences; aligning small heads "
              "does not remove them.",
              "- Not for decisions about people without a separate, domain-specific evaluation."]
    return "\n".join(lines) + "\n"
