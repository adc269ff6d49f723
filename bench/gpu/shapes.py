"""Random-initialised models of real architectures for the GPU check, their FLOPs, and GPUs' bf16 peaks.

A shape is the public config of a model family's checkpoint (layer sizes, heads, vocabulary, tying), written here so
that nothing is downloaded: ``random:llama-1b`` has Llama-3.2-1B's shapes, ``random:qwen2.5-1.5b`` Qwen2.5-1.5B's,
``random:llama-8b`` Llama-3.1-8B's, ``random:tiny`` a 2-layer Llama for CPU rehearsals. The weights are random
(``initializer_range`` normal), so throughput, memory and numerics are real and quality is meaningless. The
tokenizer is whatever folder ``--tokenizer`` names (SmolLM2's, 49,152 tokens, by default): its ids fit inside every
shape's vocabulary, so the embedding and LM head keep the real model's size.
"""

from __future__ import annotations

import re
from pathlib import Path

RANDOM = "random:"
_LLAMA3 = dict(model_type="llama", num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
               rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=8192)
SHAPES: dict[str, dict] = {
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=0, rms_norm_eps=1e-5, max_position_embeddings=2048,
                 tie_word_embeddings=True),
    "llama-1b": dict(_LLAMA3, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0,
                         rms_norm_eps=1e-6, max_position_embeddings=8192, tie_word_embeddings=True),
    "llama-8b": dict(_LLAMA3, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, tie_word_embeddings=False),
}
# dense bf16 tensor-core peaks (no sparsity), TFLOP/s, by a pattern of torch.cuda.get_device_name()
BF16_PEAK_TFLOPS = [(r"H100.*PCIe", 756.0), (r"H100|H200|GH200", 989.4), (r"B200", 2250.0), (r"A100", 312.0),
                    (r"L40S", 362.1), (r"A10G", 70.0), (r"L4\b", 121.0)]


def is_random(spec: str) -> bool:
    return spec.startswith(RANDOM)


def shape_of(spec: str) -> dict:
    """The shape dict of ``random:NAME`` (ValueError naming the known ones)."""
    name = spec[len(RANDOM):]
    if name not in SHAPES:
        raise ValueError(f"--model {spec}: unknown shape {name!r}; known: "
                         + ", ".join(RANDOM + s for s in SHAPES))
    return SHAPES[name]


def params_b(spec: str, vocab: int = 49152) -> float:
    """Parameters of shape ``spec`` in billions, from its sizes (the budget's estimates before the model exists)."""
    s = shape_of(spec)
    d, layers, v = s["hidden_size"], s["num_hidden_layers"], max(s["vocab_size"], vocab)
    hd = s.get("head_dim") or d // s["num_attention_heads"]
    attn = 2 * d * s["num_attention_heads"] * hd + 2 * d * s["num_key_value_heads"] * hd
    per_layer = attn + 3 * d * s["intermediate_size"]
    return (layers * per_layer + v * d * (1 if s["tie_word_embeddings"] else 2)) / 1e9


def build(spec: str, tokenizer, *, device: str, dtype: str, seed: int = 0):
    """A random model of shape ``spec`` on ``device`` in ``dtype`` (initialised there: an 8B model in seconds)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(shape_of(spec))
    kind = shape.pop("model_type")
    shape["vocab_size"] = max(shape["vocab_size"], len(tokenizer))
    config = AutoConfig.for_model(kind, **shape, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, {"bf16": "bfloat16", "fp16": "float16",
                                                                               "fp32": "float32"}[dtype]))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save(model, tokenizer, folder: Path) -> Path:
    """The model as a checkpoint folder every cream stage loads (weights, config, tokenizer, chat template)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def body_params(model) -> int:
    """Parameters outside the input embedding and LM head (the 2N of a token's forward FLOPs)."""
    skip = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings()
    if head is not None:
        skip.add(id(head.weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def forward_flops(model, seq_tokens, head_tokens) -> float:
    """Model FLOPs of one forward over sequences of ``seq_tokens`` tokens each (an iterable), with the LM head applied
    at ``head_tokens`` positions in all (the response tokens a scorer reads): 2·N_body per token, causal attention
    2·T²·(heads·head_dim) per layer, the head 2·hidden·vocab per position read."""
    cfg = model.config
    attn = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    n_body = body_params(model)
    seq = [int(t) for t in seq_tokens]
    return (2.0 * n_body * sum(seq) + 2.0 * cfg.num_hidden_layers * attn * sum(t * t for t in seq)
            + 2.0 * cfg.hidden_size * cfg.vocab_size * float(head_tokens))


def bf16_peak(device_name: str, override: float | None = None) -> tuple[float | None, str]:
    """(peak bf16 FLOP/s, where the figure comes from) for a device name; (None, why) when unknown."""
    if override:
        return override * 1e12, "--peak-tflops"
    for pattern, tflops in BF16_PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return tflops * 1e12, f"{tflops:g} TFLOP/s dense bf16 ({pattern.split('.')[0]} datasheet)"
    return None, f"no bf16 peak known for {device_name!r} (pass --peak-tflops)"
