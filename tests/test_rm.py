"""Reward-model scorer (`--reward rm`, `--reward-model`): batched rewards vs one-at-a-time forwards, pooling at the
last token, pairs by the reward model, the OUT/rm cache resumed after kill -9, bad reward models as one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cream_data.tables import io
from cream_data.engines import hf_score, models, rm_score
from cream_data.errors import CreamError
from cream_data.stages.label import LabelConfig, label, pair_from_scores
from tests.support import REPO
from tests.support.cli import assert_user_error, snapshot
from tests.support.models import make_tiny_model, naive_rewards
from tests.support.tables import responses_table


@pytest.fixture(scope="session")
def tiny_rm(tmp_path_factory):
    """A 2-layer random LlamaForSequenceClassification (num_labels = 1) with SmolLM2's tokenizer."""
    return make_tiny_model(tmp_path_factory.mktemp("rm") / "tiny-rm", seed=5, num_labels=1)


def _texts(t):
    return t["prompt"].to_pylist(), t["response"].to_pylist()


def test_batched_rewards_equal_one_at_a_time(tmp_path, tiny_rm):
    ref = models.resolve(str(tiny_rm))
    tok = rm_score.check(ref)
    model = rm_score.load(ref)
    P, R = _texts(responses_table(n_prompts=8, n=3))
    tk = rm_score.tokenize(tok, P, R)
    assert len(tk.ids) < len(R)  # the identical response is scored once
    # the templated conversation, no generation prompt: it ends with the assistant turn's end
    assert tok.convert_ids_to_tokens(tk.ids[0][-3:])[1:] == ["<|im_end|>", "Ċ"]
    scorer = rm_score.RMScorer(model, tok.pad_token_id, batch_size=5, max_tokens=10_000)
    plan = hf_score.plan_batches(np.array([len(x) for x in tk.ids]), 5, 10_000)
    assert any(len({len(tk.ids[i]) for i in b}) > 1 for b in plan)  # padding in play
    ours = scorer.score(tk)[tk.inverse]
    naive = naive_rewards(model, tok, P, R)
    assert np.max(np.abs(ours - naive)) <= 1e-4
    assert np.std(naive) > 0


def test_pooling_without_a_pad_id_is_at_the_last_token(tmp_path, tiny_rm):
    """A model with no pad_token_id pools at the last token alone; batched, it gets a pad id ending no sequence."""
    import torch

    ref = models.resolve(str(tiny_rm))
    tok = rm_score.check(ref)
    model = rm_score.load(ref)
    model.config.pad_token_id = None
    P, R = _texts(responses_table(n_prompts=4, n=3, seed=2))
    naive = naive_rewards(model, tok, P, R)  # before the scorer gives the model a pad id
    tk = rm_score.tokenize(tok, P, R)
    ours = rm_score.RMScorer(model, tok.pad_token_id, batch_size=4).score(tk)[tk.inverse]
    pad = model.config.pad_token_id
    assert pad is not None and all(x[-1] != pad for x in tk.ids)
    assert np.max(np.abs(ours - naive)) <= 1e-4
    with torch.inference_mode():  # the head applied by hand to the last position's hidden state
        ids = torch.tensor([tk.ids[0]])
        by_hand = model.score(model.model(input_ids=ids).last_hidden_state[0, -1])[0].item()
    assert ours[np.flatnonzero(tk.inverse == 0)[0]] == pytest.approx(by_hand, abs=1e-5)


def _scores(out):
    return io.read_table(out / "scores", "scores").to_pandas()


def test_reward_rm_picks_pairs_by_the_reward_model(tmp_path, tiny_model, tiny_model_b, tiny_rm):
    resp = io.write_table(responses_table(n_prompts=6, n=4), tmp_path / "responses", "responses")
    out = tmp_path / "lab"
    cfg = LabelConfig(model=str(tiny_model), ref=str(tiny_model_b), prev_model=str(tiny_model_b), reward="rm",
                      reward_model=str(tiny_rm), iteration=1)
    s = label(resp, cfg, out)
    assert str(tiny_rm.resolve()) in s.models_scored and len(list((out / "rm").iterdir())) == 1
    scores = _scores(out)
    assert set(scores.scorer) == {"current", "previous", "rm"}  # the DPO scores stay for the consistency report
    rm = scores[scores.scorer == "rm"].sort_values(["prompt_id", "response_idx"])
    assert (rm.reward_kind == "rm").all() and (rm.model == str(tiny_rm.resolve())).all()
    assert rm.logp.isna().all() and rm.ref_model.isna().all()
    cur = scores[scores.scorer == "current"].sort_values(["prompt_id", "response_idx"])
    assert rm.n_tokens.tolist() == cur.n_tokens.tolist()  # the policy's response length, as in every row
    # rewards: a one-at-a-time forward of the reward model
    responses = io.read_table(resp, "responses").sort_by([("prompt_id", "ascending"), ("response_idx", "ascending")])
    ref = models.resolve(str(tiny_rm))
    naive = naive_rewards(rm_score.load(ref), rm_score.check(ref), *_texts(responses))
    np.testing.assert_allclose(rm.reward, naive, atol=1e-4)

    prefs = io.read_table(out / "preferences", "preferences").to_pandas()
    assert len(prefs) == 6
    picked_by_cur = 0
    for _, row in prefs.iterrows():
        r = rm[rm.prompt_id == row.prompt_id].reward.to_numpy()
        assert row.chosen_idx == int(np.argmax(r)) and row.rejected_idx == int(np.argmin(r))
        c = cur[cur.prompt_id == row.prompt_id].reward.to_numpy()
        picked_by_cur += (row.chosen_idx, row.rejected_idx) == (int(np.argmax(c)), int(np.argmin(c)))
    assert picked_by_cur < 6  # the two rewards disagree somewhere: the pairs follow the reward model
    assert set(prefs.consistency_method) == {"none"} and set(prefs.weight) == {1.0}

    # re-pairing the stored scores by the reward model loads no model and gives the same pairs
    pair_from_scores(resp, out, LabelConfig(model="", reward="rm"), tmp_path / "re")
    again = io.read_table(tmp_path / "re" / "preferences", "preferences").to_pandas()
    assert again.chosen_idx.tolist() == prefs.chosen_idx.tolist()
    assert again.rejected_idx.tolist() == prefs.rejected_idx.tolist()

    # a rerun reuses the cached rewards
    again = label(resp, cfg, out)
    assert str(tiny_rm.resolve()) in again.models_reused and again.models_scored == []


def test_reward_model_as_a_diagnostic_and_with_its_own_template(tmp_path, tiny_model, tiny_rm):
    """With another --reward the rm rows are added and the pairs stay the DPO ones; a reward model whose
    tokenizer/template differs from the policy's is fine (it reads its own templated conversation)."""
    other = make_tiny_model(tmp_path / "rm-other-template", seed=6, num_labels=1)
    ct = other / "chat_template.jinja"
    ct.write_text(ct.read_text().replace("'<|im_start|>' + message['role']", "'<|im_start|>' + message['role'] + ':'"))
    ref_other = models.resolve(str(other))
    tok_other, tok_policy = rm_score.check(ref_other), models.load(str(tiny_model), with_model=False)[1]
    assert models.chat_template_hash(tok_other) != models.chat_template_hash(tok_policy)

    resp = io.write_table(responses_table(n_prompts=4, n=3), tmp_path / "responses", "responses")
    plain = tmp_path / "plain"
    label(resp, LabelConfig(model=str(tiny_model)), plain)
    out = tmp_path / "diag"
    label(resp, LabelConfig(model=str(tiny_model), reward_model=str(other)), out)
    scores = _scores(out)
    assert set(scores.scorer) == {"current", "rm"}
    assert io.read_table(out / "preferences", "preferences")["chosen_idx"].equals(
        io.read_table(plain / "preferences", "preferences")["chosen_idx"])
    cache = io.read_table(out / "rm" / os.listdir(out / "rm")[0], "rm_rewards")
    assert set(cache["template_hash"].to_pylist()) == {models.chat_template_hash(tok_other)}


def test_kill_during_rm_scoring_then_resume(tmp_path, tiny_model, tiny_rm):
    resp = io.write_table(responses_table(n_prompts=40, n=4, seed=3), tmp_path / "responses", "responses")
    out = tmp_path / "lab"
    # a labeling that persists its rewards every 8 rows (the internal setting flush_rows), in a process of its own
    code = ("from cream_data.stages.label import label; from cream_data.stages.label_config import LabelConfig; "
            f"label({str(resp)!r}, LabelConfig(model={str(tiny_model)!r}, reward='rm', reward_model={str(tiny_rm)!r}, "
            f"batch_size=2, flush_rows=8), {str(out)!r})")
    args = [sys.executable, "-c", code]
    env = dict(os.environ)
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("rm/*/part-*.parquet"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("rm/*/part-*.parquet")}
    assert before and not (out / "scores").exists()
    r = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    after = {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("rm/*/part-*.parquet")}
    assert all(after[k] == v for k, v in before.items()) and len(after) > len(before)  # kept, then completed
    (folder,) = (out / "rm").iterdir()
    assert io.read_table(folder, "rm_rewards").num_rows == 160  # checked read: no duplicate row
    clean = tmp_path / "clean"
    label(resp, LabelConfig(model=str(tiny_model), reward="rm", reward_model=str(tiny_rm), batch_size=2), clean)
    assert io.read_table(out / "scores", "scores").equals(io.read_table(clean / "scores", "scores"))
    assert io.read_table(out / "preferences", "preferences").equals(io.read_table(clean / "preferences", "preferences"))


def test_bad_reward_models_are_one_line(tmp_path, cream_exe, tiny_model):
    resp = io.write_table(responses_table(n_prompts=2, n=2), tmp_path / "responses", "responses")
    two = make_tiny_model(tmp_path / "two-labels", seed=7, num_labels=2)
    cases = [
        (tiny_model, ["reward model", "LlamaForCausalLM", "not a sequence-classification reward model"]),
        (two, ["num_labels = 2", "num_labels = 1"]),
        (tmp_path / "no-such-rm", ["--reward-model", "path does not exist"]),
    ]
    for rm, needles in cases:
        before = snapshot(tmp_path)
        r = cream_exe("label", resp, "--model", tiny_model, "--reward", "rm", "--reward-model", rm,
                      "--out", tmp_path / "out")
        assert_user_error(r, *needles)
        assert snapshot(tmp_path) == before, rm
    with pytest.raises(CreamError, match="reward_model: missing"):  # the library names fields; the CLI, flags
        LabelConfig(model=str(tiny_model), reward="rm")
    with pytest.raises(CreamError, match="engine: vllm does not score reward models in this version; use engine hf"):
        LabelConfig(model=str(tiny_model), reward_model=str(two), engine="vllm")


def test_run_method_rm_needs_a_reward_model(tmp_path, tiny_model, tiny_rm):
    from cream_train.run.config import load_run_config
    from tests.support.runs import tiny_run_config, write_yaml

    cfg = tiny_run_config(model=tiny_model, run_dir=tmp_path / "run", method="rm")
    with pytest.raises(CreamError, match="label.reward_model: missing"):
        load_run_config(write_yaml(tmp_path / "cfg.yaml", cfg))
    cfg["label"] = {**cfg["label"], "reward_model": str(tiny_model)}
    with pytest.raises(CreamError, match="label.reward_model .*tiny-llama: a LlamaForCausalLM checkpoint"):
        load_run_config(write_yaml(tmp_path / "causal.yaml", cfg))
    cfg["label"]["reward_model"] = str(tiny_rm)
    run_cfg, _, _ = load_run_config(write_yaml(tmp_path / "ok.yaml", cfg))
    assert run_cfg.reward == "rm" and run_cfg.train_method == "dpo" and run_cfg.label.reward_model == str(tiny_rm)
