"""Load a resolved model for inference, with every mistake found before transformers is asked: the device, a
Hub model offline mode cannot reach, custom code, a checkpoint that is no policy or whose weights are missing or
truncated (:mod:`model_roles`). The compute dtype is a stage's ``dtype`` setting (:func:`resolve_dtype`): ``auto``
is fp32 on CPU, bf16 on GPU.
Import these names from :mod:`cream_data.engines.models`.
"""

from __future__ import annotations

from cream_data.engines.model_refs import ModelRef, resolve
from cream_data.engines.model_roles import check_policy, check_weights, custom_code_error, first_line
from cream_data.errors import CreamError


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


def resolve_dtype(dtype: str, device: str) -> str:
    """A stage's ``dtype`` setting as the dtype that runs on ``device``: ``auto`` is bf16 on CUDA (fp16 on a GPU
    without bf16 support) and fp32 elsewhere (bf16 on a CPU works but is several times slower); bf16, fp16 and fp32
    are taken as given."""
    if dtype != "auto":
        return dtype
    if not str(device).startswith("cuda"):
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def torch_dtype(name: str):
    """``bf16`` | ``fp16`` | ``fp32`` as the torch dtype."""
    import torch

    return getattr(torch, _TORCH_DTYPES[name])


def dtype_name(name: str) -> str:
    """``bf16`` | ``fp16`` | ``fp32`` as transformers, vLLM and lm-eval spell it (``bfloat16`` …)."""
    return _TORCH_DTYPES[name]


def short_name(dtype) -> str:
    """A torch (or vLLM) dtype as cream names it in records: ``torch.bfloat16`` -> ``bf16``."""
    name = str(dtype).removeprefix("torch.")
    return next((k for k, v in _TORCH_DTYPES.items() if v == name), name)


def load_tokenizer(ref: ModelRef, *, trust_remote_code: bool = False, what: str = "--model"):
    """A policy's tokenizer, after the policy role check (:func:`model_roles.check_policy`: a causal LM whose
    tokenizer has a chat template and fits its embedding, and whose weights are whole; ``what``: the flag that named
    it). Reads the config, the tokenizer and the weights files' headers only."""
    return check_policy(ref, trust_remote_code=trust_remote_code, what=what)


def load(spec: str | ModelRef, *, device: str | None = None, dtype: str = "auto", trust_remote_code: bool = False,
         with_model: bool = True, mixed: bool = False, what: str = "--model", tokenizer=None):
    """Load ``(model, tokenizer, ref)`` for inference: eval mode, on ``device``, weights and compute in ``dtype``
    (a stage's setting, :func:`resolve_dtype`: ``auto`` is fp32 on CPU, bf16 on GPU).

    ``mixed``: a bf16/fp16 ``dtype`` as a mixed-precision trainer computes it (:func:`mixed_weights`): run the model
    under ``torch.autocast`` (:func:`autocast`). Mistakes (device, path, custom code, a truncated download) are
    one-line errors found before loading, naming the model as ``what`` (the flag that named it).

    ``tokenizer``: the model's tokenizer where the caller has read it already (the policy check then runs on it,
    without reading the tokenizer files a second time: ~0.2-0.4 s of a stage's start)."""
    if with_model:
        check_device(device)
    ref = spec if isinstance(spec, ModelRef) else resolve(spec)
    tok = check_policy(ref, trust_remote_code=trust_remote_code, what=what, tokenizer=tokenizer)
    if not with_model:
        return None, tok, ref
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    compute = resolve_dtype(dtype, device)
    model = from_pretrained(AutoModelForCausalLM, ref, dtype=torch_dtype("fp32" if mixed else compute),
                            trust_remote_code=trust_remote_code, what=what)
    if mixed:
        mixed_weights(model, compute)
    model.to(device).eval()
    return model, tok, ref


def mixed_weights(model, compute: str):
    """Cast the ``nn.Linear`` weights of an fp32 ``model`` to ``compute`` (bf16 | fp16), keeping the input embedding
    (and a head tied to it), the norms and everything else in fp32: under ``torch.autocast(compute)`` it then computes
    exactly what fp32 weights under autocast do (autocast casts a Linear's weight to ``compute`` for its matmul
    anyway) — the numerics of a mixed-precision trainer — with the weight memory of ``compute`` for the Linear layers.

    Why not plain bf16 weights: the residual stream, the embeddings and the norm weights then round to bf16 too, and
    the summed log-probs of a response come out ~0.003 nats per token higher than the trainer computes them (a bias,
    not noise; bench/bf16_reference.py). The stored log-probs are the next DPO step's reference, so they must carry
    the trainer's numerics."""
    import torch

    if compute == "fp32":
        return model
    target, embedding = torch_dtype(compute), model.get_input_embeddings().weight
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.weight is not embedding:
            m.weight.data = m.weight.data.to(target)
            if m.bias is not None:
                m.bias.data = m.bias.data.to(target)
    return model


def autocast(model, compute: str):
    """The ``torch.autocast`` context a :func:`mixed_weights` model runs under (a no-op context for fp32)."""
    import contextlib

    import torch

    if compute == "fp32":
        return contextlib.nullcontext()
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch_dtype(compute))


def from_pretrained(auto_class, ref: ModelRef, *, what: str = "--model", **kwargs):
    """``auto_class.from_pretrained(ref.path, **kwargs)`` with loading failures (weights missing or truncated too)
    as one-line errors naming the model as ``what`` (the flag that named it)."""
    from safetensors import SafetensorError

    check_weights(ref, what)
    try:
        return auto_class.from_pretrained(ref.path, **kwargs)
    except OSError as e:
        raise CreamError(f"{what} {ref.name}: cannot load ({first_line(e)})") from None
    except SafetensorError as e:
        raise CreamError(f"{what} {ref.name}: cannot load its weights ({first_line(e)}); "
                         "the checkpoint may be incomplete or corrupt") from None
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise custom_code_error(ref, "it needs", what) from None
