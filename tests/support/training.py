"""Training data: eight preference pairs with stored reference log-probs of a given model, and SFT examples."""

from __future__ import annotations

import pyarrow as pa

import schemas
from cream_data.tables import io

PAIRS = [
    ("What is 2+2?", "2+2 is 4.", "It is 5, I think."),
    ("Name a colour.", "Blue.", "A colour is a number."),
    ("Say hello.", "Hello!", "Goodbye forever."),
    ("What is the capital of France?", "Paris.", "London, probably."),
    ("Count to three.", "1, 2, 3.", "3, 2, 1, 0, -1."),
    ("Is water wet?", "Yes, water makes things wet.", "No."),
    ("Give a prime number.", "7 is prime.", "8 is prime."),
    ("Spell cat.", "C-A-T.", "K-A-T-T."),
]
WEIGHTS = [1.0, 0.8, 0.6, 0.9, 0.4, 1.0, 0.7, 0.5]  # each pair's weight (its C)


def _stored_logps(model_dir, prompts, responses):
    """log pi(y|x) summed over the response tokens: templated prompt (with generation prompt) vs templated
    prompt + response; the suffix tokens are scored from one full forward with a full log-softmax."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out, n = [], []
    for p, r in zip(prompts, responses):
        p_ids = tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
        ids = tok.apply_chat_template(p + r, tokenize=True, return_dict=False)
        assert ids[: len(p_ids)] == p_ids
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
        target = torch.tensor(ids[len(p_ids):])
        out.append(logp[len(p_ids) - 1: len(ids) - 1].gather(1, target[:, None]).sum().item())
        n.append(len(ids) - len(p_ids))
    return out, n


def make_preferences(path, model_dir, *, weights=WEIGHTS, pairs=PAIRS, model_name=None, template_hash=None,
                     logps=True, drop=()):
    """A preferences table matching schemas/v1/preferences.json, stored log-probs from ``model_dir``."""
    from cream_data.engines.models import load_tokenizer, resolve
    from cream_data.engines.models import chat_template_hash as th

    ref = resolve(str(model_dir))
    prompts = [[{"role": "user", "content": q}] for q, _, _ in pairs]
    chosen = [[{"role": "assistant", "content": c}] for _, c, _ in pairs]
    rejected = [[{"role": "assistant", "content": r}] for _, _, r in pairs]
    if logps:
        c_lp, c_n = _stored_logps(model_dir, prompts, chosen)
        r_lp, r_n = _stored_logps(model_dir, prompts, rejected)
    else:
        c_lp = r_lp = c_n = r_n = [None] * len(pairs)
    h = template_hash or th(load_tokenizer(ref))
    rows = []
    for i in range(len(pairs)):
        w = weights[i]
        rows.append(dict(
            prompt_id=f"p{i}", prompt=prompts[i], chosen=chosen[i], rejected=rejected[i], chosen_idx=0,
            rejected_idx=1, iteration=1, n_responses=2, rewards=[1.0, -1.0], prev_rewards=[0.5, -0.5],
            ranks=[1, 2], prev_ranks=[1, 2], kendall_tau=2 * w - 1 if 0 <= w <= 1 else None,
            consistency=min(max(w, 0.0), 1.0), consistency_method="kendall", weight=w, chosen_logp=c_lp[i],
            rejected_logp=r_lp[i], chosen_n_tokens=c_n[i], rejected_n_tokens=r_n[i],
            model=model_name or ref.name, ref_model="m0", prev_model=None, prev_ref_model=None, template_hash=h))
    table = pa.Table.from_pylist(rows, schema=schemas.get("preferences").arrow)
    if drop:
        table = table.drop_columns(list(drop))
        import pyarrow.parquet as pq

        pq.write_table(table, path)  # not a valid full table any more: write it raw
        return path
    return io.write_table(table, path, "preferences")


def make_sft(path, n=6):
    """An SFT table of the first ``n`` pairs' prompts and chosen responses, written to ``path``."""
    rows = [dict(prompt_id=f"s{i}", prompt=[{"role": "user", "content": q}],
                 completion=[{"role": "assistant", "content": c}], source="test")
            for i, (q, c, _) in enumerate(PAIRS[:n])]
    return io.write_table(pa.Table.from_pylist(rows, schema=schemas.get("sft").arrow), path, "sft")
