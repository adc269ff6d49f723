"""How a training run holds and computes its weights (``dtype``, ``precision``, ``save_dtype`` of a training stage),
and the cast of a saved checkpoint to ``save_dtype``.

Why mixed precision is the default: at the paper's lr 1e-6 an AdamW step moves a weight by about 1e-6, far below
bf16's spacing near a typical weight (2^-7 relative: 1.2e-4 at 0.02), so updates applied to bf16 weights round away;
fp32 master weights keep them (tests/test_precision.py measures both on CPU in bf16).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cream_train.config import TrainConfig

logger = logging.getLogger("cream.train")


@dataclass(frozen=True)
class Precision:
    """How a training run holds and computes its weights, from the ``dtype``, ``precision`` and ``save_dtype``
    settings on this machine.

    mixed (default): fp32 master weights, forward and backward under ``compute`` autocast (fp16 adds loss scaling)
    — at lr 1e-6 an Adam step (~1e-6 per weight) is far below bf16's spacing near a typical weight (0.02 -> 1.2e-4),
    so only fp32 master weights keep it. pure: the weights themselves in ``compute``."""

    compute: str  # bf16 | fp16 | fp32: the autocast (mixed) or weight (pure) dtype
    master: str  # the dtype the optimizer updates
    save: str  # the saved checkpoint's dtype
    mode: str  # mixed | pure

    @classmethod
    def of(cls, cfg: TrainConfig, device: str) -> "Precision":
        from cream_data.engines.models import resolve_dtype

        compute = resolve_dtype(cfg.dtype, device)
        master = "fp32" if cfg.precision == "mixed" else compute
        return cls(compute, master, master if cfg.save_dtype == "master" else cfg.save_dtype, cfg.precision)

    def describe(self) -> str:
        if self.compute == "fp32":
            return "fp32 weights and compute"
        if self.mode == "pure":
            return f"pure {self.compute}: weights held and updated in {self.compute}"
        scaling = " with loss scaling" if self.compute == "fp16" else ""
        return f"fp32 master weights, {self.compute} autocast{scaling} (mixed)"

    def record(self) -> dict[str, str]:
        return {"dtype": self.compute, "precision": self.mode, "master_dtype": self.master, "save_dtype": self.save}


def precision_of(cfg: TrainConfig) -> Precision:
    """The precision policy of ``cfg`` on this machine (CUDA when visible, else CPU), warned about where it loses
    updates: pure low-precision weights with a learning rate below 1e-5."""
    import torch

    p = Precision.of(cfg, "cuda" if torch.cuda.is_available() else "cpu")
    if p.mode == "pure" and p.compute != "fp32" and cfg.lr < 1e-5:
        logger.warning(f"precision pure with {p.compute} weights at lr {cfg.lr:g}: most Adam updates (~lr per weight) "
                       f"are below {p.compute}'s spacing and round away; use precision mixed (fp32 master weights)")
    return p




def cast_checkpoint(folder: Path, dtype: str) -> int:
    """Cast every floating-point tensor of the ``*.safetensors`` files in ``folder`` to ``dtype`` (bf16 | fp16 |
    fp32) and record it in ``config.json``; the number of tensors changed (0: the checkpoint was in ``dtype``).
    Done on the saved files, so it holds whatever engine gathered them (DDP, ZeRO-3, FSDP)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from cream_data.engines.models import dtype_name, torch_dtype
    from cream_data.tables.io import atomic_write_json

    target, changed = torch_dtype(dtype), 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            metadata = fh.metadata()
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        todo = [k for k, t in tensors.items() if t.is_floating_point() and t.dtype != target]
        if not todo:
            continue
        for k in todo:
            tensors[k] = tensors[k].to(target)
        tmp = f.with_name(f".{f.name}.tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(f)
        changed += len(todo)
    config = folder / "config.json"
    if changed and config.is_file():
        import json

        data = json.loads(config.read_text())
        data["dtype" if "dtype" in data or "torch_dtype" not in data else "torch_dtype"] = dtype_name(dtype)
        atomic_write_json(config, data)
    return changed
