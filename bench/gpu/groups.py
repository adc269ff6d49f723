"""The GPU check's rows in table order, one function per group of rows that ``--rows`` names: labeling with the small
model, sampling, DPO, the `cream run` row, the large model's rows, and vLLM's (part of the sampling group, run last:
it takes half the card). Each function builds or frees the models its rows need and returns its rows; the rows
themselves measure (bench/gpu/rows.py, bench/gpu/run_row.py), and bench/gpu/check.py times, budgets and records them.
"""

from __future__ import annotations

from pathlib import Path

from bench.gpu import rows as R
from bench.gpu import shapes
from bench.gpu.check import GROUPS, Check, Row, attempt, estimate, release, step
from bench.gpu.run_row import run_1iter


def run_check(ctx: Check) -> list[Row]:
    """Every row: the small model's first, the cream run next, the large model's last (the budget skips what is
    left)."""
    return label_rows(ctx) + sample_rows(ctx) + dpo_rows(ctx) + run_rows(ctx) + large_rows(ctx) + vllm_rows(ctx)


# ---------------------------------------------------------------------------------------------- the groups
def label_rows(ctx: Check) -> list[Row]:
    """Labeling throughput with the small model, which is built here (in the labeler's numerics) for the rows after."""
    step(ctx, "label_items", R.label_items)
    step(ctx, "small_model", lambda c: build_model(c, "small") or c.state["small_model"])
    ctx.state["small_b"] = size_b(ctx, "small")
    return [attempt(ctx, "label_small", ctx.args.model, ctx.state["small_b"], R.label_throughput, "small")]


def sample_rows(ctx: Check) -> list[Row]:
    """`cream sample`'s hf engine with the small model; its responses feed the DPO and large rows, so it samples for
    them even when its own row is not asked for. The small model is freed after."""
    small, b = ctx.args.model, ctx.state["small_b"]
    if "small_model" in ctx.state:
        step(ctx, "small_model", lambda c: as_sampler_weights(c) or c.state["small_model"])
    if ctx.selected("sample_hf") or not any(ctx.selected(r) for r in GROUPS["dpo"] + GROUPS["large"][1:]):
        rows = [attempt(ctx, "sample_hf", small, b, R.sample_hf)]
    else:  # the DPO rows still need its responses
        step(ctx, "sample_row", R.sample_hf)
        rows = [Row("sample_hf", small, "skipped", "not in --rows (sampled for the DPO rows)")]
    release(ctx, "small_model")
    return rows


def dpo_rows(ctx: Check) -> list[Row]:
    """The small model's preferences labeled once, then the stored-vs-computed reference, DPO with each reference and
    the mixed-precision check (the stored variant keeps the starting weights for it)."""
    small, b = ctx.args.model, ctx.state["small_b"]
    if any(ctx.selected(r) for r in GROUPS["dpo"]):
        step(ctx, "prefs_small", R.label_stage, "small")
    rows = [attempt(ctx, "reference_drift", small, b, R.reference_drift),
            attempt(ctx, "dpo_small_stored", small, b, R.dpo_variant, "small", "stored"),
            attempt(ctx, "mixed_precision", small, b, R.mixed_precision),
            attempt(ctx, "dpo_small_computed", small, b, R.dpo_variant, "small", "computed")]
    release(ctx)
    return rows


def run_rows(ctx: Check) -> list[Row]:
    """One CREAM iteration of `cream run` on the small model."""
    return [attempt(ctx, "run_1iter", ctx.args.model, ctx.state["small_b"], run_1iter)]


def large_rows(ctx: Check) -> list[Row]:
    """The large model's rows; it is built (and saved, for the label stage and the trainer) only when its first row
    fits the budget."""
    spec, names = ctx.args.large, GROUPS["large"]
    if spec == "none":
        return [Row(n, "-", "skipped", "--large none") for n in names]
    b = size_b(ctx, "large")
    first = next((n for n in names if ctx.selected(n)), None)
    if first is None or estimate(ctx, first, b) > ctx.left():
        return [attempt(ctx, n, spec, b, None) for n in names]  # each says why it is skipped
    step(ctx, "large_model", lambda c: build_model(c, "large") or c.state["large_model"])
    rows = [attempt(ctx, "label_large", spec, b, R.label_throughput, "large")]
    release(ctx, "large_model")
    if any(ctx.selected(n) for n in names[1:]):
        step(ctx, "prefs_large", R.label_stage, "large")
    rows += [attempt(ctx, "dpo_large_stored", spec, b, R.dpo_variant, "large", "stored"),
             attempt(ctx, "dpo_large_computed", spec, b, R.dpo_variant, "large", "computed")]
    release(ctx)
    return rows


def vllm_rows(ctx: Check) -> list[Row]:
    """vLLM sampling and vLLM's scores against the hf labeler's, with the small model (or why they are skipped)."""
    spec, b = ctx.args.model, ctx.state["small_b"]
    why = R.vllm_missing(ctx)
    if why:
        return [Row(n, spec, "skipped", why) for n in ("sample_vllm", "score_vllm_vs_hf")]
    got = {}

    def both(c):
        got.update({r.name: r for r in R.vllm_rows(c)})
        return got["sample_vllm"]
    first = attempt(ctx, "sample_vllm", spec, b, both)
    return [first, got.get("score_vllm_vs_hf") or Row("score_vllm_vs_hf", spec, "failed", first.result)]


# ---------------------------------------------------------------------------------------------- models
def build_model(ctx: Check, size: str) -> None:
    """``ctx.state[SIZE_dir]`` (a checkpoint folder) and ``SIZE_model`` in the labeler's numerics: a random model is
    initialised on the device in the stages' dtype and saved; a real one is loaded as `cream label` loads it."""
    from cream_data.engines import models

    spec = ctx.args.model if size == "small" else ctx.args.large
    if shapes.is_random(spec):
        model = shapes.build(spec, ctx.need("tokenizer"), device=ctx.device, dtype=ctx.dtype)
        ctx.state[f"{size}_dir"] = shapes.save(model, ctx.need("tokenizer"), ctx.work / f"model-{size}")
        model.float()  # a bf16 checkpoint loaded in fp32 for the labeler, as models.load(mixed=True) does
        models.mixed_weights(model, ctx.dtype)
    else:
        model, _, ref = models.load(spec, device=ctx.device, dtype=ctx.dtype, mixed=True)
        ctx.state[f"{size}_dir"] = Path(ref.path)
    ctx.state[f"{size}_model"] = model


def as_sampler_weights(ctx: Check) -> None:
    """The small model in `cream sample`'s numerics: every weight in the stages' dtype."""
    from cream_data.engines import models

    ctx.need("small_model").to(models.torch_dtype(ctx.dtype))


def size_b(ctx: Check, size: str) -> float:
    """The model's size in billions: counted when it is loaded, from the shape before."""
    model, spec = ctx.state.get(f"{size}_model"), ctx.args.model if size == "small" else ctx.args.large
    if model is not None:
        return R.billions(model)
    return shapes.params_b(spec, len(ctx.need("tokenizer"))) if shapes.is_random(spec) else 1.0
