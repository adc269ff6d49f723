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

from cream_data.engines.model_identity import chat_template_hash, content_id, same_weights
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
    "chat_template_hash", "check_device", "check_policy", "check_policy_files", "check_reward_model", "check_weights",
    "content_id", "default_device", "dtype_name", "embedded_checkpoint", "from_pretrained", "load", "load_tokenizer",
    "mixed_weights", "read_tokenizer", "resolve", "resolve_dtype", "reward_model_problem",
    "same_weights", "short_name", "torch_dtype",
]
