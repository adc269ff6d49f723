"""Models: resolve what the user typed, load it, and say what it is. One import point for four jobs:

- :mod:`cream_data.engines.model_refs` — which model a name means (a Hub id, a local checkpoint folder, the
  embedded ``smollm2-135m-instruct`` converted once into ``$CREAM_CACHE``);
- :mod:`cream_data.engines.model_roles` — whether a checkpoint is what its role needs (a policy, a reward model),
  from its config, tokenizer and weights files, before any weights load;
- :mod:`cream_data.engines.model_loading` — device checks and loading, with one-line errors before loading;
- :mod:`cream_data.engines.model_identity` — content ids (caches and resumes key on them), same-weights checks,
  the chat-template hash.

Every public name of the four is importable from here, and callers use this module.
"""

from __future__ import annotations

from pathlib import Path

from cream_data.engines.model_identity import content_id, same_weights, template_hash
from cream_data.engines.model_loading import (
    autocast, check_device, default_device, dtype_name, from_pretrained, load, load_tokenizer, mixed_weights,
    resolve_dtype, short_name, torch_dtype,
)
from cream_data.engines.model_refs import (
    EMBEDDED_ALIAS, EMBEDDED_INSTALL, EMBEDDED_PACKAGE, ModelRef, cache_dir, embedded_checkpoint, resolve,
)
from cream_data.engines.model_roles import (
    check_policy, check_policy_files, check_reward_model, check_weights, read_tokenizer, reward_model_problem,
)
from cream_data.engines.model_roles import first_line as _first_line

__all__ = [
    "EMBEDDED_ALIAS", "EMBEDDED_INSTALL", "EMBEDDED_PACKAGE", "ModelRef", "_first_line", "autocast", "cache_dir",
    "check_device", "check_policy", "check_policy_files", "check_reward_model", "check_weights", "content_id",
    "default_device", "dtype_name", "embedded_checkpoint", "from_pretrained", "load", "load_tokenizer",
    "make_tiny_model", "mixed_weights", "read_tokenizer", "resolve", "resolve_dtype", "reward_model_problem",
    "same_weights", "short_name", "template_hash", "torch_dtype",
]


def make_tiny_model(out: str | Path, *, seed: int = 0, layers: int = 2, hidden: int = 64,
                    num_labels: int | None = None) -> Path:
    """A tiny random Llama-family model with the embedded model's real tokenizer and chat template.

    For tests and smoke runs: no download, seconds to build, same tokenizer as SmolLM2. ``num_labels``: a
    ``LlamaForSequenceClassification`` with that many outputs (a reward model when 1) instead of a causal LM.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    out = Path(out)
    src = embedded_checkpoint()
    tok = AutoTokenizer.from_pretrained(src)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **({"num_labels": num_labels} if num_labels else {}),
    )
    model = LlamaForSequenceClassification(config) if num_labels else LlamaForCausalLM(config)
    if not num_labels:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
