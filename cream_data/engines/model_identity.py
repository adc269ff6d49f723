"""What a model *is*, not where it lives: content ids of checkpoints, same-weights checks, the template hash.
Import these names from :mod:`cream_data.engines.models`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cream_data.engines.model_refs import ModelRef, resolve

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_SAMPLES, _SAMPLE_BYTES = 16, 1 << 16
_ID_CACHE: dict[tuple, str] = {}


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


def chat_template_hash(tokenizer) -> str:
    """Fingerprint of what decides tokenisation under the chat template: vocab, specials, template."""
    h = hashlib.sha256()
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    h.update(json.dumps(tokenizer.all_special_tokens, ensure_ascii=False).encode())
    h.update((tokenizer.chat_template or "").encode())
    h.update(type(tokenizer).__name__.encode())
    return h.hexdigest()[:16]


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
