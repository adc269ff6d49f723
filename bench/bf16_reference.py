"""Stored DPO reference under bf16: how far the labeler's stored log-probs sit from the trainer's step-0 policy.

`cream label` stores log pi_{M_t}(y|x) (``chosen_logp``/``rejected_logp``, summed over the response tokens) and
`cream train` uses them as the DPO reference. At step 0 the policy is M_t, so with a computed reference the margin
h = (log pi(c) - ref(c)) - (log pi(r) - ref(r)) is exactly 0; with the stored one it is

    h0 = Δc - Δr,   Δ = log pi(y|x) under the trainer's numerics - stored log pi(y|x) under the labeler's numerics

and β·h0 is what enters the loss's sigmoid at step 0. This script measures Δ and β·h0 for every combination of

  trainer numerics (CreamDPOTrainer's own forward: cream's ``build_dpo_trainer`` on a preferences table, its
  train dataloader, ``compute_loss`` with TRL's fused LM head; the per-pair log-probs are captured at
  ``cream_loss``):
      autocast   fp32 master weights, TrainingArguments bf16=True (accelerate wraps forward in bf16 autocast)
      fp32       fp32 weights, no autocast (the CPU default today)
  labeler numerics (cream_data.engines.hf_score: ``tokenize`` + ``HFScorer.score``, as `cream label` does):
      bf16              bf16 weights (what `dtype: auto` stores on a GPU)
      bf16+head32       bf16 weights; LM head + log-softmax in fp32 (hidden state upcast)
      bf16+normhead32  bf16 weights; final RMSNorm, LM head and log-softmax in fp32
      bf16lin+autocast  nn.Linear weights bf16, embeddings / norms fp32, scored under bf16 autocast: what
                        `cream label --dtype bf16` does (models.load(..., mixed=True), HFScorer(compute="bf16"))
      fp32+autocast     fp32 weights, scored under bf16 autocast (the trainer's numerics)
      fp32              fp32 weights (the CPU default today)
      fp32+autocast/np  (only if asked) fp32+autocast without prefix sharing
  and rows "(trainer X)": the trainer against itself in other numerics; "(trainer autocast/regrouped)" is the
  autocast trainer with the pairs grouped into other batches of the same size: in bf16 the batch shapes alone move
  the log-probs (blocked kernels sum in another order, bf16 roundings flip), a floor no stored reference (whose
  batches are never the trainer's) can go below

and prints, per (trainer, labeler): β·max|h0|, β·mean h0, β·sd h0, t = mean/(sd/√n) of h0 (a bias when |t| is
large), mean Δ per sequence and its t, mean Δ per token (signed: ΣΔ/Σtokens) and mean |Δ| per token (Σ|Δ|/Σtokens);
then each labeler's weight memory and scoring time here. The token ids the trainer collates are asserted
identical to those the labeler scored.

Pairs (``--source``): GSM8K train questions (+ cream's answer suffix) as prompts; ``gsm8k`` (default): the reference
solution (calculator annotations dropped, ``#### x`` as ``Answer: x``) as chosen and the same solution with every
number after its first line changed as rejected; ``sample``: two responses of the model itself per prompt (cream's
HF sampler, fp32, T=0.8, top-p 0.95), as CREAM pairs them (slow on a CPU). Responses of --min-tokens..--max-tokens
response tokens (with the template's end of turn).

    CREAM_CACHE=… .venv/bin/python bench/bf16_reference.py [--model smollm2-135m-instruct] [--pairs 24]
                                                           [--source sample|gsm8k] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("CREAM_CACHE", str(REPO / ".cache" / "cream"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
SUFFIX = ("Answer the question by thinking step by step. At the end, output the final answer, "
          "starting with 'Answer:'.")
LABELERS = ("bf16", "bf16+head32", "bf16+normhead32", "bf16lin+autocast", "fp32+autocast", "fp32+autocast/np",
            "fp32")
DEFAULT_LABELERS = ("bf16", "bf16+head32", "bf16+normhead32", "bf16lin+autocast", "fp32+autocast", "fp32")
TRAINERS = ("autocast", "fp32")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ pairs
def _clean(answer: str) -> str:
    """A GSM8K solution as a model would write it: no calculator annotations, ``#### x`` as ``Answer: x``."""
    return re.sub(r"<<[^>]*>>", "", answer).replace("#### ", "Answer: ")


def _wrong(answer: str, rng) -> str:
    """The same solution with every number after its first line changed (a plausible wrong answer)."""
    head, _, rest = answer.partition("\n")
    return head + "\n" + re.sub(r"\d+", lambda m: str(int(m.group()) + int(rng.integers(1, 10))), rest)


def make_pairs(ref, tok, args) -> tuple[list[list[dict]], list[str], list[str]]:
    """``args.pairs`` (prompt, chosen, rejected) with both responses of min..max response tokens."""
    from cream_data.engines.hf_score import response_token_span

    rows = [json.loads(line) for line in GSM8K.read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(rows))

    def n_tok(p, y):
        ids, start = response_token_span(tok, p, y)
        return len(ids) - start

    def fits(p, c, r):
        return c.strip() != r.strip() and all(args.min_tokens <= n_tok(p, y) <= args.max_tokens for y in (c, r))

    prompts, chosen, rejected = [], [], []
    if args.source == "gsm8k":
        for i in order:
            p = [{"role": "user", "content": f"{rows[i]['question']}\n{SUFFIX}"}]
            c = _clean(rows[i]["answer"])
            r = _wrong(c, rng)
            if fits(p, c, r):
                prompts.append(p), chosen.append(c), rejected.append(r)
            if len(prompts) == args.pairs:
                break
        return prompts, chosen, rejected

    import torch
    from transformers import AutoModelForCausalLM

    from cream_data.engines import models
    from cream_data.engines.base import GenerationParams
    from cream_data.engines.hf_sample import HfSampler

    model = models.from_pretrained(AutoModelForCausalLM, ref, dtype=torch.float32).eval()
    sampler = HfSampler(model, tok)
    params = GenerationParams(0.8, 0.95, args.max_tokens)
    pos, chunk = 0, 16
    while len(prompts) < args.pairs and pos < len(order):
        idx = order[pos: pos + chunk]
        pos += chunk
        convs = [[{"role": "user", "content": f"{rows[i]['question']}\n{SUFFIX}"}] for i in idx]
        for p, g in zip(convs, sampler.generate(convs, [int(i) for i in idx], 2, params)):
            if fits(p, g[0].text, g[1].text) and len(prompts) < args.pairs:
                prompts.append(p), chosen.append(g[0].text), rejected.append(g[1].text)
        log(f"pairs {len(prompts)}/{args.pairs} after {pos} prompts")
    del model, sampler
    return prompts, chosen, rejected


# ------------------------------------------------------------------------------------------------ labeler
class Fp32Head:
    """LM head from ``weight`` in fp32 on an upcast hidden state (logits never rounded to bf16)."""

    def __init__(self, weight):
        self.w = weight.detach().float()

    def __call__(self, h):
        import torch.nn.functional as F

        return F.linear(h.float(), self.w)


def fp32_norm(norm):
    """A copy of an RMSNorm that takes any dtype and returns fp32 (weight in fp32, no rounding of its output)."""
    import torch

    class Fp32RMSNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(norm.weight.detach().float(), requires_grad=False)
            self.eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))

        def forward(self, x):
            x = x.float()
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    return Fp32RMSNorm()


def load_labeler(ref, variant: str):
    """(model, autocast?, prefix_sharing?) for a labeler variant; the model in eval mode as ``models.load`` leaves it."""
    import torch
    from transformers import AutoModelForCausalLM

    from cream_data.engines import models

    bf16_weights = variant.startswith("bf16") and variant != "bf16lin+autocast"
    model = models.from_pretrained(AutoModelForCausalLM, ref,
                                   dtype=torch.bfloat16 if bf16_weights else torch.float32).eval()
    if variant in ("bf16+head32", "bf16+normhead32"):
        head = Fp32Head(model.get_output_embeddings().weight)
        model.get_output_embeddings = lambda: head  # instance override: what hf_score's _response_logps calls
        if variant == "bf16+normhead32":
            dec = model.get_decoder()
            dec.norm = fp32_norm(dec.norm)
    if variant == "bf16lin+autocast":  # what `cream label --dtype bf16` loads: models.mixed_weights
        models.mixed_weights(model, "bf16")
    return model, variant.endswith("autocast") or variant == "fp32+autocast/np", not variant.endswith("/np")


def weight_mib(model) -> float:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total / 2**20


def label_scores(ref, tok, tokenized, variant: str) -> tuple[np.ndarray, dict]:
    """Summed response log-probs per distinct item, as `cream label` computes them (HFScorer, its defaults)."""
    import contextlib

    import torch

    from cream_data.engines.hf_score import HFScorer
    from cream_data.stages.label_config import LabelConfig

    fields = getattr(LabelConfig, "__dataclass_fields__", {})
    batch_size = getattr(fields.get("batch_size"), "default", 8)  # `cream label`'s defaults
    max_tokens = getattr(fields.get("max_batch_tokens"), "default", 8192)
    model, autocast, sharing = load_labeler(ref, variant)
    scorer = HFScorer(model, tok.pad_token_id, batch_size=batch_size, max_tokens=max_tokens, prefix_sharing=sharing)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
        values = scorer.score(tokenized)
    secs = time.perf_counter() - t0
    cost = {"weights_mib": weight_mib(model), "score_s": secs, "prefix_sharing": scorer.prefix_sharing,
            "autocast": autocast, "param_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})}
    del model, scorer
    return values, cost


# ------------------------------------------------------------------------------------------------ trainer
def write_table(folder: Path, ref, tok, prompts, chosen, rejected, c_lp, r_lp, c_n, r_n) -> Path:
    """A preferences table like `cream label` writes (schema-checked), stored log-probs ``c_lp``/``r_lp``."""
    import pyarrow as pa

    import schemas
    from cream_data.engines.models import chat_template_hash
    from cream_data.tables import io

    th = chat_template_hash(tok)
    out = []
    for i in range(len(prompts)):
        out.append(dict(
            prompt_id=f"g{i}", prompt=prompts[i], chosen=[{"role": "assistant", "content": chosen[i]}],
            rejected=[{"role": "assistant", "content": rejected[i]}], chosen_idx=0, rejected_idx=1, iteration=1,
            n_responses=2, rewards=[1.0, 0.0], prev_rewards=None, ranks=[1, 2], prev_ranks=None, kendall_tau=None,
            consistency=0.8, consistency_method="kendall", weight=0.8, chosen_logp=float(c_lp[i]),
            rejected_logp=float(r_lp[i]), chosen_n_tokens=int(c_n[i]), rejected_n_tokens=int(r_n[i]),
            model=ref.name, ref_model=None, prev_model=None, prev_ref_model=None, template_hash=th))
    schema = schemas.get("preferences").arrow
    rows = [{k: v for k, v in r.items() if k in schema.names} for r in out]
    return io.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "preferences", "preferences")


def trainer_logps(prefs: Path, model_spec: str, work: Path, tokenized, item_c, item_r, batch_size: int, beta: float):
    """Step-0 policy log-probs of every pair under each trainer numerics, through CreamDPOTrainer.compute_loss.

    The trainer is built by cream's own ``prepare_dpo`` + ``build_dpo_trainer`` with TrainingArguments bf16=True
    (what a GPU gets; forced here on CPU), so its accelerator wraps forward in bf16 autocast once prepared. The
    fp32 pass runs the same trainer and batches before that wrapping (no autocast: the CPU default's numerics)."""
    import torch

    import cream_train.dpo as dpo
    import cream_train.train as tr
    from cream_train.config import DPOTrainConfig
    from cream_train.nonfinite import ROW_COLUMN

    orig_args = tr._common_args
    own = "precision" in getattr(DPOTrainConfig, "__dataclass_fields__", {})
    extra = {"dtype": "bf16", "precision": "mixed"} if own else {}  # cream's setting: fp32 master + bf16 autocast
    if not own:  # an older cream: bf16 only on a GPU; force it
        tr._common_args = lambda *a, **k: {**orig_args(*a, **k), "bf16": True}
    captured = []
    orig_loss = dpo.cream_loss

    def capture(pc, pr, rc, rr, c, b):
        out = orig_loss(pc, pr, rc, rr, c, b)
        captured.append([t.detach().double().cpu().numpy() for t in (pc, pr, rc, rr, out.chosen_rewards,
                                                                        out.rejected_rewards)])
        return out

    dpo.cream_loss = capture
    try:
        cfg = DPOTrainConfig(data=str(prefs), model=model_spec, out=str(work / "model"), reference="stored",
                             max_steps=1, batch_size=batch_size, lr=1e-6, logging_steps=1, warmup_ratio=0.0,
                             beta=beta, **extra)
        data = tr.prepare_dpo(cfg)
        assert data.stored, "the trainer did not accept the stored reference log-probs"
        trainer = tr.build_dpo_trainer(cfg, data, work / "trainer")
        acc = trainer.accelerator
        assert trainer.args.bf16 and acc.mixed_precision == "bf16" and acc.native_amp, "bf16 autocast not set up"
        assert next(trainer.model.parameters()).dtype == torch.float32, "policy not fp32 (master weights)"
        batches = []
        for batch in trainer.get_train_dataloader():
            rows = [int(r) for r in batch.pop(ROW_COLUMN)]
            batches.append((rows, trainer._prepare_inputs(batch)))
        check_ids(batches, tokenized, item_c, item_r)
        n = len(trainer.train_dataset)
        # the same pairs in other batches of the same size (the trainer's collator, pairs regrouped): batch
        # composition alone, the noise floor
        regrouped, perm = [], np.random.default_rng(1).permutation(n).tolist()
        for a in range(0, n, batch_size):
            b = trainer.data_collator([trainer.train_dataset[i] for i in perm[a: a + batch_size]])
            regrouped.append(([int(r) for r in b.pop(ROW_COLUMN)], trainer._prepare_inputs(b)))
        out = {}
        model = None
        for name, todo in (("fp32", batches), ("autocast", batches), ("autocast/regrouped", regrouped)):
            if name == "fp32":
                model = trainer.model
            elif model is trainer.model:
                model = acc.prepare_model(trainer.model, evaluation_mode=True)
            pol_c, pol_r, refc, refr, rw = (np.full(n, np.nan) for _ in range(5))
            t0 = time.perf_counter()
            with torch.no_grad():
                for rows, batch in todo:
                    captured.clear()
                    trainer.compute_loss(model, dict(batch))
                    pc, pr, rc, rr, cr, rj = captured[0]
                    pol_c[rows], pol_r[rows], refc[rows], refr[rows], rw[rows] = pc, pr, rc, rr, cr - rj
            secs = time.perf_counter() - t0
            # the trainer's own margin (β·h0 with the table's stored reference) = the formula used offline
            own = beta * ((pol_c - refc) - (pol_r - refr))
            assert np.allclose(own, rw, atol=1e-4), "captured margins disagree with β·h0"
            out[name] = {"chosen": pol_c, "rejected": pol_r, "table_ref": (refc, refr), "forward_s": secs}
            log(f"trainer {name}: {secs:.1f}s")
        return out
    finally:
        tr._common_args = orig_args
        dpo.cream_loss = orig_loss


def check_ids(batches, tokenized, item_c, item_r) -> None:
    """The trainer's collated ids (prompt + completion) and completion start are exactly what the labeler scored."""
    checked = 0
    for rows, batch in batches:
        ids, attn, comp = (batch[k].cpu() for k in ("input_ids", "attention_mask", "completion_mask"))
        half = len(rows)
        for b in range(2 * half):
            row = rows[b % half]
            item = (item_c if b < half else item_r)[row]
            seq = ids[b][attn[b] == 1].tolist()
            cm = comp[b][attn[b] == 1].tolist()
            start = cm.index(1)
            assert all(cm[start:]) and not any(cm[:start]), "completion mask not a suffix"
            assert seq == list(tokenized.ids[item]), f"row {row}: trainer ids differ from the labeler's"
            assert start == int(tokenized.start[item]), f"row {row}: completion start {start} vs {tokenized.start[item]}"
            checked += 1
    log(f"token ids identical for all {checked} sequences (trainer batches vs labeler)")


# ------------------------------------------------------------------------------------------------ stats
def stats(pol_c, pol_r, lab_c, lab_r, n_c, n_r, beta: float) -> dict:
    dc, dr = pol_c - lab_c, pol_r - lab_r
    h = dc - dr
    d = np.concatenate([dc, dr])
    ntok = np.concatenate([n_c, n_r]).astype(np.float64)
    n = len(h)
    t = lambda x: float(x.mean() / (x.std(ddof=1) / math.sqrt(len(x)))) if x.std(ddof=1) > 0 else float("nan")  # noqa
    return {"pairs": n, "beta_max_abs_h0": float(beta * np.abs(h).max()), "beta_mean_h0": float(beta * h.mean()),
            "beta_sd_h0": float(beta * h.std(ddof=1)), "t_h0": t(h), "mean_delta": float(d.mean()),
            "sd_delta": float(d.std(ddof=1)), "t_delta": t(d), "mean_delta_per_token": float(d.sum() / ntok.sum()),
            "mean_abs_delta_per_token": float(np.abs(d).sum() / ntok.sum()), "max_abs_delta": float(np.abs(d).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Variants and columns: see the module docstring.")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--source", choices=("gsm8k", "sample"), default="gsm8k",
                    help="gsm8k: reference solution vs the same with its numbers changed; sample: 2 model samples "
                         "(slow on a CPU: minutes per 16 prompts)")
    ap.add_argument("--min-tokens", type=int, default=30, help="shortest response (tokens, with end of turn)")
    ap.add_argument("--max-tokens", type=int, default=150, help="longest response (tokens)")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=4, help="trainer pairs per micro-batch")
    ap.add_argument("--labelers", default=",".join(DEFAULT_LABELERS),
                    help=f"comma-separated labeler variants, of {', '.join(LABELERS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    labelers = [v.strip() for v in args.labelers.split(",") if v.strip()]
    bad = [v for v in labelers if v not in LABELERS]
    if bad:
        ap.error(f"--labelers: unknown {bad}; expected some of {', '.join(LABELERS)}")

    import torch

    from cream_data.engines import models
    from cream_data.engines.hf_score import tokenize

    if args.threads:
        torch.set_num_threads(args.threads)
    ref = models.resolve(args.model)
    tok = models.load_tokenizer(ref)
    t_start = time.perf_counter()
    prompts, chosen, rejected = make_pairs(ref, tok, args)
    n = len(prompts)
    # rows as `cream label` sees them: each prompt's responses in a responses table (here chosen, rejected)
    tokenized = tokenize(tok, [p for p in prompts for _ in (0, 1)], [y for c, r in zip(chosen, rejected) for y in (c, r)])
    item_c, item_r = tokenized.inverse[0::2], tokenized.inverse[1::2]
    ntok = tokenized.n_tokens
    n_c, n_r = ntok[item_c], ntok[item_r]
    resp_tokens = int(n_c.sum() + n_r.sum())
    all_tokens = int(sum(len(tokenized.ids[i]) for i in np.concatenate([item_c, item_r])))
    print(f"model={ref.name} pairs={n} source={args.source} response tokens {int(min(n_c.min(), n_r.min()))}–"
          f"{int(max(n_c.max(), n_r.max()))} (mean {resp_tokens / (2 * n):.0f}; {resp_tokens} of {all_tokens} tokens) "
          f"beta={args.beta} torch_threads={torch.get_num_threads()} device=cpu", flush=True)

    lab, costs = {}, {}
    for v in labelers:
        values, cost = label_scores(ref, tok, tokenized, v)
        lab[v], costs[v] = values, cost
        log(f"labeler {v}: {cost['score_s']:.1f}s, weights {cost['weights_mib']:.0f} MiB {cost['param_dtypes']}")

    stored = lab.get("bf16", lab[labelers[0]])  # the table carries the GPU default's values (any would do)
    with tempfile.TemporaryDirectory(prefix="cream-bench-bf16ref-") as tmp:
        work = Path(tmp)
        prefs = write_table(work, ref, tok, prompts, chosen, rejected, stored[item_c], stored[item_r], n_c, n_r)
        tr = trainer_logps(prefs, args.model, work, tokenized, item_c, item_r, args.batch_size, args.beta)

    results = []
    for t_name in TRAINERS:
        pc, pr = tr[t_name]["chosen"], tr[t_name]["rejected"]
        for v in labelers:
            results.append({"trainer": t_name, "labeler": v,
                            **stats(pc, pr, lab[v][item_c], lab[v][item_r], n_c, n_r, args.beta)})
        # the trainer against itself: in the other numerics, and (autocast) with one pair per batch — the floor
        # any stored reference meets in bf16, since the labeler's batches are never the trainer's
        for other in (("fp32", "autocast/regrouped") if t_name == "autocast" else ("autocast",)):
            o = tr[other]
            results.append({"trainer": t_name, "labeler": f"(trainer {other})",
                            **stats(pc, pr, o["chosen"], o["rejected"], n_c, n_r, args.beta)})

    print("\nΔ = trainer log π − stored log π per sequence (nats); h0 = Δc − Δr (the step-0 margin); "
          "t = mean/(sd/√n)\n")
    print("| trainer | labeler (stored) | β·max\\|h0\\| | β·mean h0 | β·sd h0 | t(h0) | mean Δ | t(Δ) | "
          "Δ/token | \\|Δ\\|/token |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['trainer']} | {r['labeler']} | {r['beta_max_abs_h0']:.4f} | {r['beta_mean_h0']:+.4f} | "
              f"{r['beta_sd_h0']:.4f} | {r['t_h0']:+.1f} | {r['mean_delta']:+.4f} | {r['t_delta']:+.1f} | "
              f"{r['mean_delta_per_token']:+.5f} | {r['mean_abs_delta_per_token']:.5f} |")
    base = "fp32+autocast" if "fp32+autocast" in lab else None
    for v in labelers:
        costs[v]["max_abs_diff_vs_fp32_autocast"] = float(np.abs(lab[v] - lab[base]).max()) if base else None
    print("\n| labeler | param dtypes | weights MiB | autocast | prefix sharing | score s (CPU) | resp tok/s | "
          "max\\|logp − fp32+autocast\\| |")
    print("| --- | --- | ---: | --- | --- | ---: | ---: | ---: |")
    for v in labelers:
        c = costs[v]
        d = c["max_abs_diff_vs_fp32_autocast"]
        print(f"| {v} | {'/'.join(c['param_dtypes'])} | {c['weights_mib']:.0f} | {c['autocast']} | "
              f"{c['prefix_sharing']} | {c['score_s']:.1f} | {resp_tokens / c['score_s']:.0f} | "
              f"{'–' if d is None else f'{d:.2e}'} |")
    print(f"\ntrainer forward (CPU, {n} pairs, no grad): " +
          ", ".join(f"{k} {v['forward_s']:.1f}s" for k, v in tr.items()) +
          f"; total {time.perf_counter() - t_start:.0f}s")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "model": ref.name, "pairs": n, "source": args.source, "beta": args.beta, "response_tokens": resp_tokens,
            "results": results, "labeler_costs": costs,
            "trainer_forward_s": {k: v["forward_s"] for k, v in tr.items()},
            "per_pair": {"chosen_n_tokens": n_c.tolist(), "rejected_n_tokens": n_r.tolist(),
                         "labeler": {v: {"chosen": lab[v][item_c].tolist(), "rejected": lab[v][item_r].tolist()}
                                     for v in labelers},
                         "trainer": {k: {"chosen": v["chosen"].tolist(), "rejected": v["rejected"].tolist()}
                                     for k, v in tr.items()}}}, indent=2))


if __name__ == "__main__":
    main()
