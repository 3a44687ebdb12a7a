"""Tiny reference models built from configs with random weights, saved the way their libraries save them:
transformers CLIPModel, SiglipModel and ClapModel folders (with a byte-level BPE tokenizer and the
model's own processor), and an open_clip architecture registered with ``add_model_config`` plus a
safetensors weights file. Real architectures and real loading code; only the sizes are tiny."""

from __future__ import annotations

import json
from pathlib import Path

import torch

OPEN_CLIP_ARCH = "fuse-tiny-vit"


def _bpe_vocab(specials: list[str]) -> dict[str, int]:
    """Specials first, then every byte as a token alone and at a word's end: any text tokenizes, no merges."""
    from open_clip.tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    words = [*specials, *chars, *(c + "</w>" for c in chars)]
    return {w: i for i, w in enumerate(words)}


def _tokenizer(d: Path, cls, specials: list[str], **kw):
    vocab = _bpe_vocab(specials)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = cls(str(d / "vocab.json"), str(d / "merges.txt"), **kw)
    tok.save_pretrained(str(d))
    (d / "vocab.json").unlink(), (d / "merges.txt").unlink()  # tokenizer.json holds them
    return tok, vocab


def _clip_tokenizer(d: Path):
    from transformers import CLIPTokenizer

    return _tokenizer(d, CLIPTokenizer, ["<|startoftext|>", "<|endoftext|>"])


def _vision(**kw) -> dict:
    return dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                patch_size=8, **kw)


def make_clip(d: Path, seed: int = 0) -> Path:
    """A CLIPModel (8-d joint space) with its tokenizer (77 positions) and image processor (32 px)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    d.mkdir(parents=True, exist_ok=True)
    tok, vocab = _clip_tokenizer(d)
    eos = vocab["<|endoftext|>"]
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77, eos_token_id=eos, bos_token_id=vocab["<|startoftext|>"], pad_token_id=eos)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=_vision(), projection_dim=8)).save_pretrained(str(d))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(d))
    return d


def make_siglip(d: Path) -> Path:
    """A SiglipModel: 64 text positions, attention-pooling image head, last-token text head."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    d.mkdir(parents=True, exist_ok=True)
    tok, vocab = _clip_tokenizer(d)
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=64, pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(1)
    SiglipModel(SiglipConfig(text_config=text, vision_config=_vision())).save_pretrained(str(d))
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(d))
    return d


def make_clap(d: Path) -> Path:
    """A ClapModel: RoBERTa text tower and HTSAT audio tower, both projected into a 12-d space; 1 s windows."""
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig, \
        RobertaTokenizer

    d.mkdir(parents=True, exist_ok=True)
    tok, vocab = _tokenizer(d, RobertaTokenizer, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    text = ClapTextConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=100, pad_token_id=vocab["<pad>"])
    audio = ClapAudioConfig(spec_size=64, num_mel_bins=16, window_size=4, depths=[1, 1], num_attention_heads=[1, 2],
                            patch_embeds_hidden_size=8, hidden_size=16, projection_dim=12)
    torch.manual_seed(2)
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=12)) \
        .save_pretrained(str(d))
    ClapFeatureExtractor(feature_size=16, max_length_s=1, truncation="rand_trunc", padding="repeatpad") \
        .save_pretrained(str(d))
    return d


def make_open_clip(d: Path) -> str:
    """A tiny open_clip ViT registered under OPEN_CLIP_ARCH (add_model_config) and its random weights as a
    safetensors file: the source string open_clip:ARCH@FILE, as a tag would be named."""
    import open_clip
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    config = d / f"{OPEN_CLIP_ARCH}.json"
    config.write_text(json.dumps({
        "embed_dim": 8,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 8, "head_width": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(config)
    torch.manual_seed(3)
    save_file(open_clip.create_model(OPEN_CLIP_ARCH).state_dict(), str(d / "weights.safetensors"))
    return f"open_clip:{OPEN_CLIP_ARCH}@{d / 'weights.safetensors'}"
