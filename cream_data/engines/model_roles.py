"""What a model is for, judged from its ``config.json``, tokenizer files and weights files' headers before any
weights load and before anything is written. One check per role, and every stage that takes a model of that role
asks it:

    policy         a causal LM: config ``architectures`` name a class of transformers' AutoModelForCausalLM
                   mapping (``*ForCausalLM``, ``GPT2LMHeadModel``, ``Gemma3ForConditionalGeneration`` …), or its
                   ``auto_map`` has AutoModelForCausalLM. ``cream sample/label/train --model``, ``--ref``,
                   ``--prev-model``, ``--prev-ref``, the judge, and a run's M0 (``cream run --check``)
    reward model   a sequence classifier with one logit (``*ForSequenceClassification``, ``num_labels = 1``).
                   ``--reward-model``, a run's ``label.reward_model``

Both need a tokenizer (its files beside the weights) with a chat template, an embedding that covers it (config
``vocab_size`` >= ``len(tokenizer)``; a larger tokenizer makes ids the embedding cannot look up, an IndexError in
the middle of scoring) and, in a local folder, whole weights (:func:`check_weights`). Why not let
transformers find out: it loads a sequence classifier as a causal LM with a warning (``score.weight UNEXPECTED``)
and an untrained head, a folder without tokenizer files fails with a 20-line ValueError, and one without weights
only when the model loads, after the work before it. transformers' own warnings while it reads a config or a
tokenizer are held back (:func:`quiet`): what cream refuses is one error line, not a warning and then the error.
Import these names from :mod:`cream_data.engines.models`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from cream_data.engines.model_refs import ModelRef, resolve
from cream_data.errors import CreamError
from cream_data.jsonfile import read_json_object

# Any one of these beside the weights lets AutoTokenizer build a tokenizer (fast, sentencepiece, BPE or WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")
# The weights transformers loads from a local folder, in its order: one file, or the shards its ``.index.json`` names.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def check_policy(ref: ModelRef, *, trust_remote_code: bool = False, what: str = "model", tokenizer=None):
    """The policy's tokenizer, after one-line errors for what cannot be a policy (``what`` names it in them: the
    flag or key the user wrote): a checkpoint that is not a causal LM, a tokenizer missing or without a chat
    template, weights missing or truncated, an embedding smaller than the tokenizer. Reads the config, the tokenizer
    and the weights files' headers only (``tokenizer``: the one :func:`read_tokenizer` gave already). What the files
    alone show (:func:`check_policy_files`) is refused first, before transformers is imported: ~0.3 s, not ~3."""
    if tokenizer is None:
        check_policy_files(ref, what=what)
    tok = tokenizer if tokenizer is not None else read_tokenizer(ref, trust_remote_code=trust_remote_code, what=what)
    config = read_config(ref, trust_remote_code=trust_remote_code, what=what)
    if not _is_causal_lm(config):
        archs = list(config.architectures or [])
        rm = any(a.endswith("ForSequenceClassification") for a in archs)
        found = f"a {archs[0]} checkpoint{' (a reward model)' if rm else ''}" if archs else \
            f"its config names no architecture and model_type {config.model_type!r} has no causal-LM class"
        raise CreamError(f"{what} {ref.name}: {found}, not a causal language model; a policy is a *ForCausalLM "
                         f"checkpoint with a chat template{' (a reward model goes to --reward-model)' if rm else ''}")
    check_weights(ref, what)
    _check_vocab(ref, config, tok, what)
    return tok


def check_policy_files(ref: ModelRef, *, what: str = "model") -> None:
    """The part of :func:`check_policy` that needs neither transformers nor torch (``cream run --check`` and
    ``--plan`` import neither): a local checkpoint's config.json reads and names no sequence classifier, and its
    tokenizer files and whole weights are there. The stages run the whole check before they load anything."""
    if ref.kind == "hub":
        return
    _, archs = _local_files(ref, what)
    if archs and all(a.endswith("ForSequenceClassification") for a in archs):
        raise CreamError(f"{what} {ref.name}: a {archs[0]} checkpoint (a reward model), not a causal language "
                         "model; a policy is a *ForCausalLM checkpoint with a chat template (a reward model goes to "
                         "--reward-model)")
    check_weights(ref, what)


def _local_files(ref: ModelRef, what: str) -> tuple[dict, list[str]]:
    """A local checkpoint's config.json and the architectures it names, after its tokenizer files are found: the
    role checks' order is the tokenizer, the architecture, then the weights."""
    config = read_json_object(Path(ref.path) / "config.json", what=f"config of {what} {ref.name}",
                              fix="the checkpoint may be incomplete or corrupt")
    _need_tokenizer_files(ref, what)
    return config, [a for a in config.get("architectures") or [] if isinstance(a, str)]


def _need_tokenizer_files(ref: ModelRef, what: str) -> None:
    if ref.kind != "hub" and not any((Path(ref.path) / f).is_file() for f in TOKENIZER_FILES):
        raise CreamError(f"{what} {ref.name}: the folder has no tokenizer files (expected one of "
                         f"{', '.join(TOKENIZER_FILES[:2])}, …); save the tokenizer beside the weights "
                         "(tokenizer.save_pretrained(folder))")


def check_weights(ref: ModelRef, what: str = "--model") -> None:
    """A local checkpoint's weights are whole, read from the files alone (no transformers, no torch): one of
    :data:`WEIGHT_FILES`, or its ``.index.json`` and every shard the index names, and each ``*.safetensors`` file as
    long as its header says (a truncated copy). A Hub model is checked when it is fetched."""
    if ref.kind == "hub":
        return
    folder = Path(ref.path)
    for name in WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        if (folder / name).is_file() or index.is_file():
            if not (folder / name).is_file():
                _need_shards(ref, index, what)
            _check_safetensors(ref, what)
            return
    raise CreamError(f"{what} {ref.name}: the folder has no weights (expected model.safetensors, "
                     "model-*.safetensors with an index, or pytorch_model.bin)")


def _need_shards(ref: ModelRef, index: Path, what: str) -> None:
    """Every weights file a sharded checkpoint's index names is in the folder."""
    weight_map = read_json_object(index, what=f"weights index of {what} {ref.name}",
                                  fix="the checkpoint may be incomplete or corrupt").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CreamError(f"{what} {ref.name}: {index.name} has no weight_map; the checkpoint may be incomplete or "
                         "corrupt")
    shards = sorted({str(f) for f in weight_map.values()})
    missing = [f for f in shards if not (index.parent / f).is_file()]
    if missing:
        raise CreamError(f"{what} {ref.name}: {index.name} names {len(shards)} weights file(s) and {missing[0]}"
                         f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''} is not in the folder; the "
                         "checkpoint may be incomplete")


def _check_safetensors(ref: ModelRef, what: str) -> None:
    """Each local ``*.safetensors`` file is as long as its header says: a truncated copy fails here, at once."""
    for f in sorted(Path(ref.path).glob("*.safetensors")):
        size = f.stat().st_size
        with open(f, "rb") as fh:  # 8 bytes: header length n; n bytes of JSON: each tensor's data_offsets
            n = int.from_bytes(fh.read(8), "little")
            header = fh.read(n) if 0 < n <= size - 8 else b""
        try:
            tensors = [t for k, t in json.loads(header).items() if k != "__metadata__"]
            expected = 8 + n + max((t["data_offsets"][1] for t in tensors), default=0)
        except (ValueError, AttributeError, LookupError, TypeError):  # not JSON, or not the layout above
            expected = None
        if expected != size:
            problem = "no readable safetensors header" if expected is None else f"its header says {expected}"
            raise CreamError(f"{what} {ref.name}: cannot load its weights ({f.name}: {size} bytes, {problem}); "
                             "the checkpoint may be incomplete or corrupt")


def check_reward_model(ref: ModelRef, *, trust_remote_code: bool = False, what: str = "--reward-model"):
    """The reward model's tokenizer, after one-line errors for what cannot be a single-logit reward model: a
    checkpoint without a sequence-classification architecture (a causal LM), ``num_labels`` ≠ 1, a tokenizer
    missing or without a chat template, weights missing or truncated, an embedding smaller than the tokenizer. Reads
    the config, the tokenizer and the weights files' headers only; what the files alone show first, before
    transformers is imported."""
    _reward_model_files(ref, what)
    tok = read_tokenizer(ref, trust_remote_code=trust_remote_code, what=what)
    config = read_config(ref, trust_remote_code=trust_remote_code, what=what)
    _not_a_reward_model(ref, list(config.architectures or []), getattr(config, "auto_map", None), what)
    if config.num_labels != 1:
        raise CreamError(f"{what} {ref.name}: its head has num_labels = {config.num_labels}; "
                         "expected a single-logit reward head (num_labels = 1)")
    check_weights(ref, what)
    _check_vocab(ref, config, tok, what)
    return tok


def _not_a_reward_model(ref: ModelRef, archs: list[str], auto_map, what: str) -> None:
    if not any(a.endswith("ForSequenceClassification") for a in archs) \
            and "AutoModelForSequenceClassification" not in (auto_map or {}):
        found = f"a {archs[0]} checkpoint" if archs else "its config names no architecture"
        raise CreamError(f"{what} {ref.name}: {found}, not a sequence-classification reward model "
                         "(expected *ForSequenceClassification with num_labels = 1; a causal LM rewards through "
                         "--reward dpo or judge)")


def _reward_model_files(ref: ModelRef, what: str) -> None:
    """The part of :func:`check_reward_model` that needs neither transformers nor torch: a local checkpoint's
    config.json names a sequence classifier (where it names architectures), its tokenizer files and whole weights."""
    if ref.kind == "hub":
        return
    config, archs = _local_files(ref, what)
    if archs:
        _not_a_reward_model(ref, archs, config.get("auto_map") if isinstance(config.get("auto_map"), dict) else None,
                            what)
    check_weights(ref, what)


def reward_model_problem(name: str, *, trust_remote_code: bool = False, what: str = "label.reward_model") -> str | None:
    """Why the reward model a run config names (``what``: its key) cannot score, as the label stage would refuse it
    (:func:`check_reward_model`), or None; a Hub model is the stage's to fetch and check."""
    try:
        ref = resolve(name)
    except CreamError as e:
        return f"{what}: {e}"
    try:
        if ref.kind == "local":
            check_reward_model(ref, trust_remote_code=trust_remote_code, what=what)
    except CreamError as e:
        return str(e)
    return None


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


def context_length(ref: ModelRef, *, trust_remote_code: bool = False, what: str = "model") -> int | None:
    """The most tokens the model reads in one sequence: its (text) config's ``max_position_embeddings``
    (``n_positions`` in GPT-2-style configs); None when the config states neither. Reads config.json only."""
    config = read_config(ref, trust_remote_code=trust_remote_code, what=what).get_text_config()
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def read_config(ref: ModelRef, *, trust_remote_code: bool = False, what: str = "model"):
    """The checkpoint's transformers config (config.json only; nothing else is read)."""
    check_checkpoint(ref, trust_remote_code, what)
    from transformers import AutoConfig

    try:
        with quiet():
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
        with quiet():
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


@contextlib.contextmanager
def quiet():
    """transformers' logging at errors only while it reads a config or a tokenizer, as it was after: a checkpoint
    cream refuses is one line (a warning such as "You are using a model of type X to instantiate …" first would be
    a second one), and the stages' logging of the loads and training after the check is left alone."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def custom_code_error(ref: ModelRef, needs: str, what: str = "model") -> CreamError:
    return CreamError(f"{what} {ref.name}: {needs} custom code that cream does not run by default; pass "
                      "--trust-remote-code if you trust the code in that checkpoint")


def check_checkpoint(ref: ModelRef, trust_remote_code: bool, what: str = "model") -> None:
    """Cheap checks before transformers is asked to read anything: a Hub model that offline mode cannot reach,
    a config.json that needs custom code, or names a ``model_type`` this transformers does not know."""
    if ref.kind == "hub":
        from huggingface_hub import constants, try_to_load_from_cache

        if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(ref.path, "config.json"), str):
            raise CreamError(f"{what} {ref.name}: not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 is set; "
                             "unset HF_HUB_OFFLINE to download it, or pass a local checkpoint folder")
        return
    config = read_json_object(Path(ref.path) / "config.json", what=f"config of {what} {ref.name}",
                              fix="the checkpoint may be incomplete or corrupt")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING  # built-in and registered types

    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in CONFIG_MAPPING:
        return
    if config.get("auto_map"):
        if not trust_remote_code:
            raise custom_code_error(ref, f"model_type {model_type!r} needs", what)
    elif isinstance(model_type, str):
        from transformers import __version__

        raise CreamError(f"{what} {ref.name}: its config.json has model_type {model_type!r}, which transformers "
                         f"{__version__} does not know (a newer transformers may: pip install -U transformers)")
