"""Reference models named by a source string, loaded as fuse models in their own joint space.

    open_clip:ARCH@PRETRAINED    an open_clip architecture and tag (or weights file): image + text towers
    hf:MODEL_ID_OR_DIR           a transformers CLIPModel or SiglipModel (image + text) or ClapModel (audio + text)

Each tower is a registered encoder with the reference's own projection and preprocessing, and an
``identity`` head, so the embeddings are the reference's own. ``fuse.load(SOURCE)`` and every command
that takes a model read the weights from the model cache (hub, open_clip); ``fuse export SOURCE DIR``
writes a normal export that carries them, which is what ``base_model`` takes.
"""

from __future__ import annotations

from fuse.base.errors import FuseError, RecipeError
from fuse.model.aligned import AlignedModel, build_model
from fuse.recipes.spec import resolve_spec

SCHEMES = ("open_clip:", "hf:")
# transformers model_type -> {tower: (encoder, its options besides model)}
HF_TOWERS = {
    "clip": {"image": ("hf-vision", {"projection": True}), "text": ("hf-text", {"projection": True})},
    "siglip": {"image": ("hf-vision", {"projection": True}), "text": ("hf-text", {"projection": True})},
    "clap": {"audio": ("hf-audio", {"projection": True, "pooling": "pooler"}), "text": ("hf-text", {"projection": True})},
}
SYNTAX = "open_clip:ARCH@PRETRAINED (e.g. open_clip:ViT-B-32@laion2b_s34b_b79k) or hf:MODEL_ID_OR_DIR"


def is_reference(source) -> bool:
    """Whether ``source`` names a reference model (a source string) rather than an export or run folder."""
    return isinstance(source, str) and source.startswith(SCHEMES)


def reference_towers(source: str) -> dict[str, tuple[str, dict]]:
    """{tower: (encoder name, options)} of a source string; one line naming the syntax when it is malformed."""
    scheme, _, rest = source.partition(":")
    if scheme == "open_clip":
        arch, at, pretrained = rest.partition("@")
        if not arch or not at or not pretrained:
            raise RecipeError(f"'{source}': write {SYNTAX}; list the tags with python -c \"import open_clip; "
                              "print(open_clip.list_pretrained())\".")
        return {t: ("open_clip", {"model": arch, "pretrained": pretrained, "tower": t}) for t in ("image", "text")}
    if not rest:
        raise RecipeError(f"'{source}': write {SYNTAX}.")
    from transformers import AutoConfig

    from fuse.base.hf import hf_source, load_hf

    model_type = load_hf(AutoConfig, hf_source(rest)).model_type
    if model_type not in HF_TOWERS:
        raise RecipeError(f"'{source}' is a '{model_type}' checkpoint; an hf: reference is a full CLIPModel, SiglipModel "
                          f"or ClapModel checkpoint (model_type {', '.join(HF_TOWERS)}) with both of its towers.")
    return {t: (name, {"model": rest, **options}) for t, (name, options) in HF_TOWERS[model_type].items()}


def load_reference(source: str) -> AlignedModel:
    """The reference model of a source string: its towers with identity heads, in its own joint space."""
    towers = reference_towers(source)
    specs = {t: resolve_spec("encoder", name, options, f"{source} ({t} tower)") for t, (name, options) in towers.items()}
    encoders = {t: spec.build() for t, spec in specs.items()}
    dims = {t: e.info.dim for t, e in encoders.items()}
    if len(set(dims.values())) != 1:
        raise FuseError(f"'{source}': its towers embed into different widths ({dims}), so they share no joint space.")
    identity = resolve_spec("head", "identity", {}, "reference head")
    return build_model({t: (specs[t], identity) for t in towers}, next(iter(dims.values())), encoders=encoders).eval()
