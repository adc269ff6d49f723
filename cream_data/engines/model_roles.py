"""What a model is for, judged from its ``config.json`` and tokenizer files before any weights load and before
anything is written. One check per role, and every stage that takes a model of that role asks it:

    policy         a causal LM: config ``architectures`` name a class of transformers' AutoModelForCausalLM
                   mapping (``*ForCausalLM``, ``GPT2LMHeadModel``, ``Gemma3ForConditionalGeneration`` …), or its
                   ``auto_map`` has AutoModelForCausalLM. ``cream sample/label/train --model``, ``--ref``,
                   ``--prev-model``, ``--prev-ref``, the judge, and a run's M0 (``cream run --check``)
    reward model   a sequence classifier with one logit (``*ForSequenceClassification``, ``num_labels = 1``).
                   ``--reward-model``, a run's ``label.reward_model``

Both need a tokenizer (its files beside the weights) with a chat template, and an embedding that covers it
(config ``vocab_size`` >= ``len(tokenizer)``): a larger tokenizer makes ids the embedding cannot look up, an
IndexError in the middle of scoring. Why not let transformers find out: it loads a sequence classifier as a causal
LM with a warning (``score.weight UNEXPECTED``) and an untrained head, and a folder without tokenizer files fails
with a 20-line ValueError. Import these names from :mod:`cream_data.engines.models`.
"""

from __future__ import annotations

from pathlib import Path

from cream_data.engines.model_refs import ModelRef
from cream_data.errors import CreamError
from cream_data.jsonfile import read_json_object

# Any one of these beside the weights lets AutoTokenizer build a tokenizer (fast, sentencepiece, BPE or WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")


def check_policy(ref: ModelRef, *, trust_remote_code: bool = False, what: str = "model", tokenizer=None):
    """The policy's tokenizer, after one-line errors for what cannot be a policy (``what`` names it in them: the
    flag or key the user wrote): a checkpoint that is not a causal LM, a tokenizer missing or without a chat
    template, an embedding smaller than the tokenizer. Reads the config and the tokenizer only (``tokenizer``: the
    one :func:`read_tokenizer` gave already)."""
    tok = tokenizer if tokenizer is not None else read_tokenizer(ref, trust_remote_code=trust_remote_code, what=what)
    config = read_config(ref, trust_remote_code=trust_remote_code, what=what)
    if not _is_causal_lm(config):
        archs = list(config.architectures or [])
        rm = any(a.endswith("ForSequenceClassification") for a in archs)
        found = f"a {archs[0]} checkpoint{' (a reward model)' if rm else ''}" if archs else \
            f"its config names no architecture and model_type {config.model_type!r} has no causal-LM class"
        raise CreamError(f"{what} {ref.name}: {found}, not a causal language model; a policy is a *ForCausalLM "
                         f"checkpoint with a chat template{' (a reward model goes to --reward-model)' if rm else ''}")
    _check_vocab(ref, config, tok, what)
    return tok


def check_policy_files(ref: ModelRef, *, what: str = "model") -> None:
    """The part of :func:`check_policy` that needs neither transformers nor torch (``cream run --check`` and
    ``--plan`` import neither): a local checkpoint's config.json reads and names no sequence classifier, and its
    tokenizer files are there. The stages run the whole check before they load anything."""
    if ref.kind == "hub":
        return
    config = read_json_object(Path(ref.path) / "config.json", what=f"config of {what} {ref.name}",
                              fix="the checkpoint may be incomplete or corrupt")
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if archs and all(a.endswith("ForSequenceClassification") for a in archs):
        raise CreamError(f"{what} {ref.name}: a {archs[0]} checkpoint (a reward model), not a causal language "
                         "model; a policy is a *ForCausalLM checkpoint with a chat template (a reward model goes to "
                         "--reward-model)")
    _need_tokenizer_files(ref, what)


def _need_tokenizer_files(ref: ModelRef, what: str) -> None:
    if ref.kind != "hub" and not any((Path(ref.path) / f).is_file() for f in TOKENIZER_FILES):
        raise CreamError(f"{what} {ref.name}: the folder has no tokenizer files (expected one of "
                         f"{', '.join(TOKENIZER_FILES[:2])}, …); save the tokenizer beside the weights "
                         "(tokenizer.save_pretrained(folder))")


def check_reward_model(ref: ModelRef, *, trust_remote_code: bool = False, what: str = "reward model"):
    """The reward model's tokenizer, after one-line errors for what cannot be a single-logit reward model: a
    checkpoint without a sequence-classification architecture (a causal LM), ``num_labels`` ≠ 1, a tokenizer
    missing or without a chat template, an embedding smaller than the tokenizer. Reads the config and the tokenizer
    only."""
    tok = read_tokenizer(ref, trust_remote_code=trust_remote_code, what=what)
    config = read_config(ref, trust_remote_code=trust_remote_code, what=what)
    archs = list(config.architectures or [])
    if not any(a.endswith("ForSequenceClassification") for a in archs) \
            and "AutoModelForSequenceClassification" not in (getattr(config, "auto_map", None) or {}):
        found = f"a {archs[0]} checkpoint" if archs else "its config names no architecture"
        raise CreamError(f"{what} {ref.name}: {found}, not a sequence-classification reward model "
                         "(expected *ForSequenceClassification with num_labels = 1; a causal LM rewards through "
                         "--reward dpo or judge)")
    if config.num_labels != 1:
        raise CreamError(f"{what} {ref.name}: its head has num_labels = {config.num_labels}; "
                         "expected a single-logit reward head (num_labels = 1)")
    _check_vocab(ref, config, tok, what)
    return tok


def _is_causal_lm(config) -> bool:
    if "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        return True
    archs = list(config.architectures or [])
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return True  # the common case, without importing transformers' model mapping
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL

    if not archs:  # an old config: its model type decides which class AutoModelForCausalLM would build
        return config.model_type in CAUSAL
    classes = {c for v in CAUSAL.values() for c in ([v] if isinstance(v, str) else v)}
    return any(a in classes for a in archs)


def _check_vocab(ref: ModelRef, config, tok, what: str) -> None:
    """The embedding has a row for every id the tokenizer makes."""
    vocab = getattr(config.get_text_config(), "vocab_size", None)
    if isinstance(vocab, int) and len(tok) > vocab:
        raise CreamError(f"{what} {ref.name}: its tokenizer has {len(tok)} tokens but its embedding only {vocab} "
                         f"rows (config.json vocab_size); expected vocab_size >= {len(tok)}: is the tokenizer from "
                         "another checkpoint?")


def read_config(ref: ModelRef, *, trust_remote_code: bool = False, what: str = "model"):
    """The checkpoint's transformers config (config.json only; nothing else is read)."""
    check_checkpoint(ref, trust_remote_code, what)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref.path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise CreamError(f"{what} {ref.name}: cannot read its config ({first_line(e)})") from None


def read_tokenizer(ref: ModelRef, *, trust_remote_code: bool = False, what: str = "model"):
    """The checkpoint's tokenizer (pad token: end-of-sequence where it has none), with one-line errors: no tokenizer
    files in a local folder, a tokenizer transformers cannot build, no chat template."""
    check_checkpoint(ref, trust_remote_code, what)
    _need_tokenizer_files(ref, what)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as e:
        if isinstance(e, ValueError) and "trust_remote_code" in str(e):
            raise custom_code_error(ref, "its tokenizer needs", what) from None
        raise CreamError(f"{what} {ref.name}: cannot load its tokenizer ({first_line(e)})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise CreamError(f"{what} {ref.name}: tokenizer has no chat template; cream needs a chat model")
    return tok


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def custom_code_error(ref: ModelRef, needs: str, what: str = "model") -> CreamError:
    return CreamError(f"{what} {ref.name}: {needs} custom code that cream does not run by default; pass "
                      "--trust-remote-code if you trust the code in that checkpoint")


def check_checkpoint(ref: ModelRef, trust_remote_code: bool, what: str = "model") -> None:
    """Cheap checks before transformers is asked to read anything: a Hub model that offline mode cannot reach,
    a config.json that needs custom code."""
    if ref.kind == "hub":
        from huggingface_hub import constants, try_to_load_from_cache

        if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(ref.path, "config.json"), str):
            raise CreamError(f"{what} {ref.name}: not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 is set; "
                             "unset HF_HUB_OFFLINE to download it, or pass a local checkpoint folder")
        return
    config = read_json_object(Path(ref.path) / "config.json", what=f"config of {what} {ref.name}",
                              fix="the checkpoint may be incomplete or corrupt")
    if config.get("auto_map") and not trust_remote_code:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        if config.get("model_type") not in CONFIG_MAPPING_NAMES:
            raise custom_code_error(ref, f"model_type {config.get('model_type')!r} needs", what)
