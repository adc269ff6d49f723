"""Consistency between any two scorers (`--consistency-between A,B`), the pair policies (`--pair-policy weight |
agree | both`), method `scir`, and the human-answer scoring of `--human-answers`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import kendalltau, rankdata, spearmanr

import schemas
from cream_data.tables import io
from cream_data.engines import hf_score, models
from cream_data.stages.label import LabelConfig, label, pair_from_scores
from cream_data.rewards.pairing import build_preferences
from cream_data.rewards.spec import PairingSpec
from tests.support.cli import assert_user_error
from tests.support.models import naive_logps
from tests.support.runs import DEFAULT, write_tiny_run_config


def tables(rewards: dict[str, list], seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """responses + scores from ``{scorer: [[reward per response] per prompt]}`` (None = null), rows shuffled."""
    resp, score = [], []
    first = next(iter(rewards.values()))
    for p, row in enumerate(first):
        pid = f"p{p:03d}"
        for i in range(len(row)):
            resp.append({"prompt_id": pid, "prompt": [{"role": "user", "content": f"q {p}"}], "response_idx": i,
                         "response": f"{pid} answer {i}", "model": "M2", "iteration": 1, "seed": 1,
                         "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 64, "finish_reason": "stop",
                         "n_tokens": 5})
            for scorer, values in rewards.items():
                kind = {"current": "dpo", "previous": "dpo"}.get(scorer, scorer)
                score.append({"prompt_id": pid, "response_idx": i, "scorer": scorer, "model": f"model-{scorer}",
                              "ref_model": None, "logp": None, "ref_logp": None, "n_tokens": 5,
                              "reward": values[p][i], "reward_kind": kind, "judge_text": None, "confidence": None})
    rng = np.random.default_rng(seed)
    resp = [resp[k] for k in rng.permutation(len(resp))]
    score = [score[k] for k in rng.permutation(len(score))]
    return (pa.Table.from_pylist(resp, schema=schemas.get("responses").arrow),
            pa.Table.from_pylist(score, schema=schemas.get("scores").arrow))


# ---------------------------------------------------------------------------- against scipy
@pytest.mark.parametrize("method", ["kendall", "spearman"])
def test_cross_scorer_consistency_matches_scipy_on_random_and_tied_inputs(method):
    """DPO rewards (continuous) against a 0-5 judge (integers: many ties) with some null judge scores: C per prompt
    equals scipy on the usable responses' ordinal ranks (scipy's tie order), the stored partner rewards are the
    judge's, and skipped prompts follow the rules."""
    rng = np.random.default_rng(7)
    P, N = 60, 5
    cur = rng.normal(size=(P, N)).round(3)
    judge = rng.integers(0, 6, size=(P, N)).astype(float)
    judge_null = rng.random((P, N)) < 0.12
    cur_l = cur.tolist()
    judge_l = [[None if judge_null[p, i] else judge[p, i] for i in range(N)] for p in range(P)]
    responses, scores = tables({"current": cur_l, "judge": judge_l})
    prefs, summary = build_preferences(responses, scores, PairingSpec(partner="judge", consistency=method,
                                                                      scope="prompt"), iteration=1)
    got = {r["prompt_id"]: r for r in prefs.to_pylist()}
    n_pairs = 0
    for p in range(P):
        use = ~judge_null[p]
        c_u, j_u = cur[p, use], judge[p, use]
        if use.sum() < 2 or np.all(c_u == c_u[0]):
            assert f"p{p:03d}" not in got
            continue
        n_pairs += 1
        a, b = rankdata(c_u, method="ordinal"), rankdata(j_u, method="ordinal")
        stat = kendalltau(a, b).statistic if method == "kendall" else spearmanr(a, b).statistic
        row = got[f"p{p:03d}"]
        assert row["consistency"] == pytest.approx((stat + 1) / 2, abs=1e-12)
        assert row["weight"] == pytest.approx((stat + 1) / 2, abs=1e-12)
        assert row["kendall_tau"] == pytest.approx(kendalltau(a, b).statistic, abs=1e-12)
        assert row["prev_rewards"] == judge_l[p] and row["prev_model"] == "model-judge"
        idx = np.flatnonzero(use)
        assert row["chosen_idx"] == idx[np.argmax(c_u)] and row["rejected_idx"] == idx[np.argmin(c_u)]
    assert summary.pairs == n_pairs == prefs.num_rows and summary.consistency_between == ["current", "judge"]
    assert summary.responses_dropped["missing_prev"] == int(sum(judge_null[p].sum() for p in range(P)
                                                                if f"p{p:03d}" in got))


# ---------------------------------------------------------------------------- the agree policy, by hand
HAND_CUR = [[0.1, 0.5, 0.3], [0.9, 0.2, 0.4], [0.3, 0.6, 0.1], [0.2, 0.8, 0.5], [0.7, 0.1, 0.4, 0.2]]
HAND_JUDGE = [[1, 3, 2], [2, 4, 3], [2, 2, 5], [3, 3, 1], [4, 0, 1, 2]]
# Worked out on paper. chosen = argmax current, rejected = argmin current; agree = judge[chosen] > judge[rejected];
# C = (tau + 1) / 2 between the ordinal rankings (ties in the judge broken as scipy's ordinal: earlier = worse).
#   p0: chosen 1, rejected 0; judge 3 > 1 agree;  rankings identical            tau = 1     C = 1
#   p1: chosen 0, rejected 1; judge 2 < 4;        rankings reversed             tau = -1    C = 0
#   p2: chosen 1, rejected 2; judge 2 < 5;        judge ranks [3, 2, 1] vs [2, 1, 3]: 1 of 3 concordant, C = 1/3
#   p3: chosen 1, rejected 0; judge 3 = 3 (a tie is not agreement); judge ranks [2, 1, 3] vs [3, 1, 2], C = 2/3
#   p4: chosen 0, rejected 1; judge 4 > 0 agree;  ranks [1, 4, 2, 3] vs [1, 4, 3, 2]: 1 of 6 discordant, C = 5/6
HAND_C = {"p000": 1.0, "p001": 0.0, "p002": 1 / 3, "p003": 2 / 3, "p004": 5 / 6}


@pytest.mark.parametrize("policy, kept, weights", [
    ("weight", ["p000", "p001", "p002", "p003", "p004"], HAND_C),
    ("agree", ["p000", "p004"], {"p000": 1.0, "p004": 1.0}),
    ("both", ["p000", "p004"], {"p000": 1.0, "p004": 5 / 6}),
])
def test_pair_policies_against_a_hand_worked_table(policy, kept, weights):
    responses, scores = tables({"current": HAND_CUR, "judge": [[float(x) for x in r] for r in HAND_JUDGE]})
    prefs, summary = build_preferences(responses, scores, PairingSpec(partner="judge", pair_policy=policy,
                                                                      scope="prompt"), iteration=1)
    rows = {r["prompt_id"]: r for r in prefs.to_pylist()}
    assert sorted(rows) == kept
    for pid, w in weights.items():
        assert rows[pid]["weight"] == pytest.approx(w, abs=1e-12)
        assert rows[pid]["consistency"] == pytest.approx(HAND_C[pid], abs=1e-12)  # C is stored whatever the policy
    assert summary.skipped["disagree"] == 5 - len(kept) and summary.pair_policy == policy
    assert [(rows[p]["chosen_idx"], rows[p]["rejected_idx"]) for p in kept] == \
        [{"p000": (1, 0), "p001": (0, 1), "p002": (1, 2), "p003": (1, 0), "p004": (0, 1)}[p] for p in kept]


def test_pair_policy_needs_a_partner_and_distinct_scorers():
    responses, scores = tables({"current": HAND_CUR, "judge": [[float(x) for x in r] for r in HAND_JUDGE]})
    from cream_data.errors import CreamError

    with pytest.raises(CreamError, match="needs two scorers"):
        build_preferences(responses, scores, PairingSpec(partner=None, pair_policy="agree"))
    with pytest.raises(CreamError, match="must differ"):
        build_preferences(responses, scores, PairingSpec(reward_scorer="judge", partner="judge"))
    with pytest.raises(CreamError, match="no rows for scorer 'rm'"):
        build_preferences(responses, scores, PairingSpec(partner="rm"))


@pytest.mark.parametrize("kwargs, between", [
    ({}, None),  # no --prev-model: no C
    ({"prev_model": "m1"}, ("current", "previous")),  # CREAM's default
    ({"prev_model": "m1", "consistency_between": "none"}, None),
    ({"consistency_between": "judge,current"}, ("current", "judge")),  # the pair-picking role first
    ({"reward": "judge", "consistency_between": "current,judge"}, ("judge", "current")),
    ({"reward": "judge", "prev_model": "m1"}, None),  # the paper's SRLM row: no C by default
])
def test_label_config_resolves_the_two_scorers(kwargs, between):
    cfg = LabelConfig(model="m", **kwargs)
    assert cfg.pairing().between == between
    if between:
        assert set(between) <= cfg.scorer_roles()


# ---------------------------------------------------------------------------- end to end on the tiny model
def responses_table(n_prompts=5, n=4, seed=3) -> pa.Table:
    rng = np.random.default_rng(seed)
    words = "the cat sun runs blue seven answer because number green".split()
    rows = []
    for p in range(n_prompts):
        prompt = [{"role": "user", "content": f"Question {p}: " + " ".join(rng.choice(words, 4))}]
        for i in range(n):
            rows.append(dict(prompt_id=f"q{p}", prompt=prompt, response_idx=i,
                             response=" ".join(rng.choice(words, int(rng.integers(2, 9)))), model="m", iteration=1,
                             seed=0, temperature=0.8, top_p=0.95, max_new_tokens=32, finish_reason="stop",
                             n_tokens=5))
    return pa.Table.from_pylist(rows)


def prompts_table(responses: pa.Table, human: dict) -> pa.Table:
    firsts = {}
    for r in responses.to_pylist():
        firsts.setdefault(r["prompt_id"], r["prompt"])
    return pa.Table.from_pylist([{"prompt_id": p, "prompt": t, "source": "test", "reference_answer": None,
                                  "human_answer": human.get(p)} for p, t in firsts.items()])


def test_label_current_judge_both_then_repair_without_a_model(tmp_path, tiny_model, tiny_model_b, monkeypatch):
    """SCIR-style labeling on the tiny model: the DPO reward picks, the model's own (expected-score) judge is the
    partner; kept pairs are those the judge agrees on, weighted by C computed from the stored scores; re-pairing
    the stored scores under another policy loads no model."""
    resp = io.write_table(responses_table(), tmp_path / "responses", "responses")
    cfg = LabelConfig(model=str(tiny_model), ref=str(tiny_model_b), reward="dpo", consistency_between="current,judge",
                      pair_policy="both", scope="prompt", judge_max_new_tokens=3, iteration=1)
    s = label(resp, cfg, tmp_path / "lab")
    scores = io.read_table(tmp_path / "lab" / "scores", "scores").to_pylist()
    val = {(r["scorer"], r["prompt_id"], r["response_idx"]): r["reward"] for r in scores}
    assert {k[0] for k in val} == {"current", "judge"}  # the judge ran although --reward is dpo
    prefs = io.read_table(tmp_path / "lab" / "preferences", "preferences").to_pylist()
    kept = 0
    for p in range(5):
        cur = np.array([val[("current", f"q{p}", i)] for i in range(4)])
        jud = np.array([val[("judge", f"q{p}", i)] for i in range(4)])
        ch, rj = int(np.argmax(cur)), int(np.argmin(cur))
        tau = kendalltau(rankdata(cur, method="ordinal"), rankdata(jud, method="ordinal")).statistic
        row = next((r for r in prefs if r["prompt_id"] == f"q{p}"), None)
        if jud[ch] > jud[rj]:
            kept += 1
            assert row["weight"] == pytest.approx((tau + 1) / 2, abs=1e-9) and row["prev_rewards"] == jud.tolist()
        else:
            assert row is None
    assert kept == len(prefs) and s.pairing.skipped["disagree"] == 5 - kept

    def no_model(*a, **k):
        raise AssertionError("re-pairing loaded a model")

    monkeypatch.setattr(models, "load", no_model)
    rcfg = LabelConfig(model="", reward="dpo", consistency_between="current,judge", pair_policy="weight")
    summary = pair_from_scores(resp, tmp_path / "lab", rcfg, tmp_path / "re")
    again = io.read_table(tmp_path / "re" / "preferences", "preferences")
    assert summary.pairs == again.num_rows == 5 - summary.skipped["all_equal"]
    assert summary.pair_policy == "weight" and summary.consistency_between == ["current", "judge"]


def test_human_answers_are_scored_by_every_role_and_never_paired(tmp_path, tiny_model, tiny_model_b):
    """--human-answers: each prompt's human answer gets one row per scorer role; its DPO rewards equal a naive
    forward pass (log pi_t - log pi_{t-1}); prompts without one get none; no pair contains it."""
    t = responses_table()
    resp = io.write_table(t, tmp_path / "responses", "responses")
    human = {"q0": "The answer is seven because the cat runs.", "q2": "Blue sun, green number."}
    prompts = io.write_table(prompts_table(t, human), tmp_path / "prompts", "prompts")
    cfg = LabelConfig(model=str(tiny_model), ref=str(tiny_model_b), prev_model=str(tiny_model_b),
                      human_answers=True, prompts=str(prompts), iteration=1)
    label(resp, cfg, tmp_path / "lab")
    rows = io.read_table(tmp_path / "lab" / "human", "human_scores").to_pylist()
    assert sorted((r["prompt_id"], r["scorer"]) for r in rows) == [
        ("q0", "current"), ("q0", "previous"), ("q2", "current"), ("q2", "previous")]
    m, tok, _ = models.load(str(tiny_model))
    mb, _, _ = models.load(str(tiny_model_b))
    firsts = {r["prompt_id"]: r["prompt"] for r in t.to_pylist()}
    pids = ["q0", "q2"]
    convs, texts = [firsts[p] for p in pids], [human[p] for p in pids]
    lp = naive_logps(m, tok, convs, texts, batch_size=2)
    lpb = naive_logps(mb, tok, convs, texts, batch_size=2)
    ntok = hf_score.tokenize(tok, convs, texts).n_tokens
    for k, p in enumerate(pids):
        cur = next(r for r in rows if r["prompt_id"] == p and r["scorer"] == "current")
        prev = next(r for r in rows if r["prompt_id"] == p and r["scorer"] == "previous")
        assert cur["reward"] == pytest.approx(lp[k] - lpb[k], abs=1e-4) and cur["human_answer"] == human[p]
        assert prev["reward"] == pytest.approx(lpb[k] / ntok[k], abs=1e-4)  # M_{t-1} without a ref: likelihood
    prefs = io.read_table(tmp_path / "lab" / "preferences", "preferences").to_pylist()
    texts_in_pairs = {r["chosen"][0]["content"] for r in prefs} | {r["rejected"][0]["content"] for r in prefs}
    assert not texts_in_pairs & set(human.values())
    # a rerun without the flag removes the stale diagnostic
    label(resp, LabelConfig(model=str(tiny_model), ref=str(tiny_model_b), prev_model=str(tiny_model_b),
                            iteration=1), tmp_path / "lab")
    assert not (tmp_path / "lab" / "human").exists()


# ---------------------------------------------------------------------------- user errors through the console script
@pytest.mark.parametrize("args, needles", [
    (["--consistency-between", "current"], ["--consistency-between", "two different scorer roles"]),
    (["--consistency-between", "current,bogus"], ["--consistency-between", "'bogus'", "expected a scorer role"]),
    (["--consistency-between", "previous,judge"], ["--consistency-between", "'current'"]),
    (["--consistency-between", "current,rm"], ["'rm' needs --reward-model"]),
    (["--pair-policy", "agree"], ["--pair-policy: got 'agree'", "needs two scorers"]),
    (["--pair-policy", "sometimes"], ["--pair-policy", "'sometimes'", "weight, agree, both"]),
    (["--human-answers"], ["--human-answers: needs --prompts"]),
])
def test_bad_pairing_flags_are_one_line_errors(tmp_path, cream_exe, tiny_model, args, needles):
    resp = io.write_table(responses_table(2, 2), tmp_path / "responses", "responses")
    r = cream_exe("label", resp, "--out", tmp_path / "lab", "--model", tiny_model, *args)
    assert_user_error(r, *needles)
    assert not (tmp_path / "lab").exists()


def test_human_answers_without_any_in_the_prompts_table(tmp_path, cream_exe, tiny_model):
    t = responses_table(2, 2)
    resp = io.write_table(t, tmp_path / "responses", "responses")
    prompts = io.write_table(prompts_table(t, {}), tmp_path / "prompts", "prompts")
    r = cream_exe("label", resp, "--out", tmp_path / "lab", "--model", tiny_model, "--human-answers",
                  "--prompts", prompts)
    assert_user_error(r, "--human-answers", "no human_answer in any row")
    assert not (tmp_path / "lab" / "scores").exists()


# ---------------------------------------------------------------------------- cream run: method scir
def test_method_scir_and_label_keys_reach_the_label_stage(tmp_path):
    from cream_train.run.config import RunConfig, LabelSection

    scir = RunConfig(method="scir")
    assert scir.reward == "dpo" and scir.train_method == "cream"
    assert scir.label_pairing() == {"consistency_between": "current,judge", "pair_policy": "both", "scope": "prompt"}
    own = RunConfig(method="scir", label=LabelSection(pair_policy="agree", human_answers=True))
    assert own.label_pairing() == {"consistency_between": "current,judge", "pair_policy": "agree", "scope": "prompt"}
    assert RunConfig(method="cream").label_pairing() == {"consistency_between": None, "pair_policy": "weight",
                                                         "scope": "dataset"}


def test_run_check_names_the_label_keys(tmp_path, cream_exe, tiny_model):
    sft = tmp_path / "sft.jsonl"
    sft.write_text('{"prompt": "Hi?", "response": "Hello."}\n')
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "2+2?", "answer": "4", "response": "2 + 2 = 4"}\n'
                       '{"prompt": "3+3?", "answer": "6", "response": "3 + 3 = 6"}\n')
    scir = {"model": tiny_model, "method": "scir", "iterations": 1, "sft": {"data": sft},
            "prompts": {"source": prompts, "per_iteration": DEFAULT}, "label": {"human_answers": True}}  # 2 prompts
    cfg = write_tiny_run_config(tmp_path, scir, name="c",
                                label={"consistency_between": "current,bogus", "pair_policy": "sometimes"})
    r = cream_exe("run", cfg, "--check")
    assert_user_error(r, "label.consistency_between: got 'bogus'", "label.pair_policy: got 'sometimes'")
    write_tiny_run_config(tmp_path, scir, name="c", label={"consistency_between": "current,judge", "pair_policy": "agree"})
    ok = cream_exe("run", cfg, "--check")
    assert ok.code == 0, ok
    assert "consistency_between: current,judge" in ok.out and "pair_policy: agree" in ok.out
