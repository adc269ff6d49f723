"""`cream label`: log-prob engine vs a naive computation, rewards, the cache by model identity, resume, re-pairing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import kendalltau, rankdata

from cream_data.tables import io
from cream_data.engines import hf_score, models
from cream_data.stages.label import LabelConfig, label, pair_from_scores
from tests.support import REPO
from tests.support.cli import assert_user_error
from tests.support.models import make_tiny_model, naive_logps
from tests.support.tables import responses_table


@pytest.fixture
def responses_dir(tmp_path):
    return io.write_table(responses_table(), tmp_path / "responses", "responses")


def test_engine_matches_naive_full_forward(tiny_model):
    model, tok, _ = models.load(str(tiny_model))
    t = responses_table(n_prompts=8, n=3)
    prompts, resps = t["prompt"].to_pylist(), t["response"].to_pylist()
    tk = hf_score.tokenize(tok, prompts, resps)
    assert len(tk.ids) < t.num_rows  # the duplicate response was folded
    naive = naive_logps(model, tok, prompts, resps, batch_size=4)
    # prefix sharing (prompt KV once per group; batch 5 < groups of 3 + 3 cuts groups across batches) and the
    # plain path, each against the naive full forward
    for sharing in (True, False):
        scorer = hf_score.HFScorer(model, tok.pad_token_id, batch_size=5, max_tokens=256, chunk=7,
                                   prefix_sharing=sharing)
        assert scorer.prefix_sharing == sharing
        ours = scorer.score(tk)[tk.inverse]
        assert np.max(np.abs(ours - naive)) <= 1e-4, sharing
    # prompts with and without a system turn and of varied length: 8 groups, each prompt's responses one group
    groups = tk.prefix_groups()
    assert len(np.unique(groups)) == 8 and all(len(set(groups[tk.inverse[t["prompt_id"].to_numpy() == f"p{p:03d}"]])) == 1
                                               for p in range(8))
    plan = hf_score.plan_prefix_batches(tk, 5, 256)
    assert sorted(np.concatenate(plan).tolist()) == list(range(len(tk.ids)))  # every item exactly once
    assert all(len(b) <= 5 for b in plan)
    # a group is only cut when it alone exceeds the batch: here (3 responses ≤ 5) never
    assert all(len({int(g) for g in groups[b]} & {int(g) for g in groups[c]}) == 0
               for i, b in enumerate(plan) for c in plan[i + 1:])
    # the response span includes the template's end-of-turn tokens
    assert tok.convert_ids_to_tokens(tk.ids[0][tk.start[0]:])[-2:] == ["<|im_end|>", "Ċ"]


def test_label_dpo_rewards_ranks_consistency(tmp_path, responses_dir, tiny_model, tiny_model_b):
    out = tmp_path / "lab"
    cfg = LabelConfig(model=str(tiny_model), ref=str(tiny_model_b), prev_model=str(tiny_model_b), iteration=1)
    calls = []
    s = label(responses_dir, cfg, out, progress=lambda *a: calls.append(a))
    # M_{t-1} serves as reference and as previous model: two distinct models, each scored once
    assert sorted(s.models_scored) == sorted([str(tiny_model.resolve()), str(tiny_model_b.resolve())])
    assert len(list((out / "logps").iterdir())) == 2
    # progress: one bar per scored model, from 0 up to every distinct response, counts never going back
    bars = {}
    for what, done, total, tokens in calls:
        assert done >= bars.get(what, (0,))[0] and tokens >= 0
        bars[what] = (done, total)
    assert sorted(bars) == sorted(f"scoring with {m}" for m in s.models_scored)
    assert all(done == total > 0 for done, total in bars.values()) and calls[0][1] == 0

    responses = io.read_table(responses_dir, "responses")
    scores = io.read_table(out / "scores", "scores").to_pandas()
    prefs = io.read_table(out / "preferences", "preferences").to_pandas()
    cur = scores[scores.scorer == "current"].sort_values(["prompt_id", "response_idx"])
    prev = scores[scores.scorer == "previous"].sort_values(["prompt_id", "response_idx"])
    assert (cur.reward_kind == "dpo").all() and (prev.reward_kind == "likelihood_norm").all()

    # independent log-probs: naive full forward of each model
    resp = responses.sort_by([("prompt_id", "ascending"), ("response_idx", "ascending")])
    P, R = resp["prompt"].to_pylist(), resp["response"].to_pylist()
    ma, tok, _ = models.load(str(tiny_model))
    mb, _, _ = models.load(str(tiny_model_b))
    la, lb = naive_logps(ma, tok, P, R), naive_logps(mb, tok, P, R)
    np.testing.assert_allclose(cur.logp, la, atol=1e-4)
    np.testing.assert_allclose(cur.reward, la - lb, atol=2e-4)
    np.testing.assert_allclose(prev.reward, lb / prev.n_tokens.to_numpy(), atol=1e-4)

    # ranks, tau, C, chosen/rejected against scipy, prompt by prompt
    for _, row in prefs.iterrows():
        r = cur[cur.prompt_id == row.prompt_id].reward.to_numpy()
        q = prev[prev.prompt_id == row.prompt_id].reward.to_numpy()
        # the CREAM reference's ranks: scipy ordinal (ascending, ties by appearance), flipped to 1 = best
        ranks, pranks = len(r) + 1 - rankdata(r, method="ordinal"), len(q) + 1 - rankdata(q, method="ordinal")
        assert list(row.ranks) == list(ranks) and list(row.prev_ranks) == list(pranks)
        tau = kendalltau(ranks, pranks).statistic
        assert row.kendall_tau == pytest.approx(tau, abs=1e-12)
        assert row.consistency == pytest.approx((tau + 1) / 2)
        assert row.weight == pytest.approx(prefs.consistency.mean())  # the default scope: the mean C, every pair
        assert row.chosen_idx == int(np.argmax(r)) and row.rejected_idx == int(np.argmin(r))
        assert row.chosen_logp == pytest.approx(la[(resp["prompt_id"].to_numpy() == row.prompt_id)][row.chosen_idx])
        assert row.template_hash == models.chat_template_hash(tok)
    assert len(prefs) == 6


def test_rerun_reuses_stored_scores_and_repair_changes_only_weights(tmp_path, responses_dir, tiny_model, tiny_model_b):
    out = tmp_path / "lab"
    cfg = LabelConfig(model=str(tiny_model), ref=str(tiny_model_b), prev_model=str(tiny_model_b))
    label(responses_dir, cfg, out)
    first = io.read_table(out / "preferences", "preferences")
    again = label(responses_dir, cfg, out)
    assert again.models_scored == [] and len(again.models_reused) == 2
    assert io.read_table(out / "preferences", "preferences").equals(first)

    rebuilt = tmp_path / "rebuilt"
    summary = pair_from_scores(responses_dir, out, LabelConfig(model="", consistency="toporder", scope="dataset"),
                               rebuilt)
    p2 = io.read_table(rebuilt / "preferences", "preferences")
    assert p2["chosen_idx"].equals(first["chosen_idx"]) and p2["ranks"].equals(first["ranks"])
    w = np.array(p2["weight"].to_pylist())
    assert set(p2["consistency"].to_pylist()) <= {0.0, 1.0} and np.allclose(w, w[0])
    assert w[0] == pytest.approx(np.mean(p2["consistency"].to_pylist()))
    assert summary.pairs == p2.num_rows


def test_kill_during_scoring_then_resume(tmp_path, tiny_model, tiny_model_b):
    resp = io.write_table(responses_table(n_prompts=40, n=4, seed=3), tmp_path / "responses", "responses")
    out = tmp_path / "lab"
    # a labeling that persists its scores every 8 rows (the internal setting flush_rows), in a process of its own
    code = ("from cream_data.stages.label import label; from cream_data.stages.label_config import LabelConfig; "
            f"label({str(resp)!r}, LabelConfig(model={str(tiny_model)!r}, ref={str(tiny_model_b)!r}, batch_size=2, "
            f"flush_rows=8), {str(out)!r})")
    args = [sys.executable, "-c", code]
    env = dict(os.environ)
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("logps/*/part-*.parquet"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("logps/*/part-*.parquet")}
    assert before and not (out / "preferences").exists()
    r = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    after = {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("logps/*/part-*.parquet")}
    assert all(after[k] == v for k, v in before.items())  # what was scored before the crash was kept, not redone
    for folder in (out / "logps").iterdir():
        cache = io.read_table(folder, "logps")  # validation: no duplicate (prompt_id, response_idx, model)
        assert cache.num_rows == 160
    clean = tmp_path / "clean"
    label(resp, LabelConfig(model=str(tiny_model), ref=str(tiny_model_b), batch_size=2), clean)
    assert io.read_table(out / "preferences", "preferences").equals(io.read_table(clean / "preferences", "preferences"))
    assert io.read_table(out / "scores", "scores").equals(io.read_table(clean / "scores", "scores"))


def test_varying_n_is_grouped_and_n_below_2_skipped(tmp_path, tiny_model):
    t = responses_table(n_prompts=4, n=3, vary_n=True)
    t = t.filter(pa.compute.invert(pa.compute.and_(pa.compute.equal(t["prompt_id"], "p003"),
                                                   pa.compute.greater(t["response_idx"], 0))))
    resp = io.write_table(t, tmp_path / "r", "responses")
    s = label(resp, LabelConfig(model=str(tiny_model)), tmp_path / "lab")
    prefs = io.read_table(tmp_path / "lab" / "preferences", "preferences")
    assert sorted(set(prefs["n_responses"].to_pylist())) == [2, 3]
    assert s.pairing.skipped["n_lt_2"] == 1 and s.pairing.pairs == 3
    assert set(prefs["consistency_method"].to_pylist()) == {"none"} and set(prefs["weight"].to_pylist()) == {1.0}


def test_bad_inputs(tmp_path, cli, responses_dir, tiny_model, tiny_model_b):
    from cream_data.tables.validate import conform

    bad = conform(responses_table(), "responses").drop_columns(["response"])
    import pyarrow.parquet as pq

    pq.write_table(bad, tmp_path / "bad.parquet")
    r = cli("label", tmp_path / "bad.parquet", "--model", tiny_model, "--out", tmp_path / "o1")
    assert_user_error(r, "missing column 'response'")
    r = cli("label", responses_dir, "--model", tmp_path / "nope", "--out", tmp_path / "o2")
    assert_user_error(r, "path does not exist")
    # a reference with another tokenizer / chat template: refuse
    other = make_tiny_model(tmp_path / "other", seed=2)
    cfgj = other / "tokenizer_config.json"
    cfgj.write_text(cfgj.read_text().replace("<|im_start|>", "<|im_start|> "))
    if (other / "chat_template.jinja").exists():
        ct = other / "chat_template.jinja"
        ct.write_text(ct.read_text().replace("'<|im_start|>' + message['role']", "'<|im_start|>' + message['role'] + ':'"))
    r = cli("label", responses_dir, "--model", tiny_model, "--ref", other, "--out", tmp_path / "o3")
    assert_user_error(r, "another tokenizer")
    # a scores folder from another responses table
    lab = tmp_path / "lab"
    assert cli("label", responses_dir, "--model", tiny_model, "--out", lab).code == 0
    other_resp = io.write_table(responses_table(seed=9), tmp_path / "r2", "responses")
    r = cli("label", other_resp, "--scores", lab, "--out", tmp_path / "o4", "--consistency", "spearman")
    assert_user_error(r, "another responses table")
    r = cli("label", responses_dir, "--model", tiny_model, "--out", tmp_path / "o5", "--consistency", "pearson")
    assert_user_error(r, "--consistency")
    for o in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / o / "preferences").exists()


def test_judge_and_oracle_rewards(tmp_path, tiny_model):
    from cream_data.rewards.answers import oracle_reward
    from cream_data.rewards.judge import parse_judge_score

    t = responses_table(n_prompts=3, n=3)
    rows = t.to_pylist()
    for r in rows:  # answers with and without the right number
        r["response"] = f"Answer: {7 if r['response_idx'] == 1 else r['response_idx']}"
    resp = io.write_table(pa.Table.from_pylist(rows), tmp_path / "r", "responses")
    prompts = pa.table({"prompt_id": [f"p{i:03d}" for i in range(3)],
                        "prompt": [rows[3 * i]["prompt"] for i in range(3)], "source": ["t"] * 3,
                        "reference_answer": ["7", "7", "2"]})
    io.write_table(prompts, tmp_path / "prompts", "prompts")
    label(resp, LabelConfig(model=str(tiny_model), reward="oracle", prompts=str(tmp_path / "prompts")), tmp_path / "o")
    scores = io.read_table(tmp_path / "o" / "scores", "scores").to_pylist()
    orc = {(s["prompt_id"], s["response_idx"]): s["reward"] for s in scores if s["scorer"] == "oracle"}
    ref = dict(zip(prompts["prompt_id"].to_pylist(), prompts["reference_answer"].to_pylist()))
    for r in rows:
        assert orc[(r["prompt_id"], r["response_idx"])] == oracle_reward(r["response"], ref[r["prompt_id"]])
    prefs = io.read_table(tmp_path / "o" / "preferences", "preferences").to_pylist()
    assert {p["prompt_id"]: (p["chosen_idx"], p["rejected_idx"]) for p in prefs} == {
        "p000": (1, 0), "p001": (1, 0), "p002": (2, 0)}  # rejected: the first of the tied minima (np.argmin)
    assert all(p["chosen_logp"] is not None for p in prefs)  # the next step's reference log-probs are kept

    # judge, parse mode: a random tiny model writes junk, so most scores are null; whatever it writes is parsed as
    # stored (the default expected mode is tested in test_judge_expected.py)
    s = label(resp, LabelConfig(model=str(tiny_model), reward="judge", judge_max_new_tokens=8, judge_mode="parse"),
              tmp_path / "j")
    js = [x for x in io.read_table(tmp_path / "j" / "scores", "scores").to_pylist() if x["scorer"] == "judge"]
    assert len(js) == 9 and all(x["judge_text"] is not None for x in js)
    assert all(x["reward"] == parse_judge_score(x["judge_text"]) for x in js)
    assert s.judge_unparsed == sum(x["reward"] is None for x in js)
    assert s.pairing.skipped.get("nonfinite_reward", 0) + s.pairing.pairs + \
        s.pairing.skipped.get("all_equal", 0) == 3
