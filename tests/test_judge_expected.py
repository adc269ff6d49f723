"""`--judge-mode expected`: the judge's expected score under its own next-token probabilities, checked against a
forward pass written here with plain transformers; the score cue; SmolLM2's digit tokens; `--judge-template`."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

from cream_data.tables import io
from cream_data.rewards.judge import (JUDGE_PROMPT, cue_tail, find_score_cue, judge_prefix, template_problem,
                              value_token_ids)
from cream_data.stages.label import LabelConfig, label
from tests.support.cli import assert_user_error, snapshot

APPENDED = "\n[cue appended] Score:"  # the documented marker in the stored judge text (docs/REWARDS.md)


def responses(n_prompts=3, n=3) -> pa.Table:
    """Single-turn prompts (the request the judge sees is the user turn's text; one prompt per prompt_id), varied
    response lengths."""
    rows = []
    for p in range(n_prompts):
        for i in range(n):
            rows.append(dict(prompt_id=f"p{p:03d}", prompt=[{"role": "user", "content": f"What is {p} + {p}?"}],
                             response_idx=i, response=" ".join(["It is", str(p + i)] + ["indeed"] * (i * p)),
                             model="m", iteration=1, seed=0, temperature=0.8, top_p=0.95, max_new_tokens=32,
                             finish_reason="stop", n_tokens=5))
    return pa.Table.from_pylist(rows)


@pytest.fixture(scope="module")
def hf(tiny_model):
    """The tiny model and its tokenizer loaded with plain transformers, and each score value's token ids found by
    decoding every id of the vocabulary (no cream code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    decoded = [tok.decode([i]) for i in range(len(tok))]
    digit_ids = {v: [i for i, d in enumerate(decoded) if d in (str(v), f" {v}")] for v in range(6)}
    return model, tok, digit_ids


def by_hand(hf, template: str, request: str, response: str, seen: str) -> tuple[float, float]:
    """(expected score, valid mass) from the logits after [templated judge prompt + ``seen``]: softmax over the
    vocabulary, summed over each value's digit ids, renormalised over the values 0..5."""
    model, tok, digit_ids = hf
    chat = [{"role": "user", "content": template.format(request=request, response=response)}]
    prompt = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    # the judge generated after the templated prompt's tokens, so its text is tokenised on its own
    ids = tok(prompt, add_special_tokens=False)["input_ids"] + tok(seen, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
    per_value = np.array([probs[digit_ids[v]].sum().item() for v in range(6)])
    mass = per_value.sum()
    return float((per_value / mass) @ np.arange(6)), float(mass)


def judge_rows(out) -> list[dict]:
    scores = io.read_table(out / "scores", "scores")
    return scores.filter(pa.compute.equal(scores["scorer"], "judge")).to_pylist()


# ---------------------------------------------------------------------------- tokenizer
def test_smollm2_digits_are_single_tokens_after_a_separate_space(tiny_model):
    """SmolLM2's tokenizer (the tiny model has the real one) writes "Score: 4" as 'Score' ':' 'Ġ' '4': every digit
    is one token, no token is " 4", and the space is a token of its own. So the cue ends with a space (the next
    token is then the digit itself) and each value has exactly one token id."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert tok.convert_ids_to_tokens(tok("Score: 4", add_special_tokens=False)["input_ids"]) == \
        ["Score", ":", "Ġ", "4"]
    assert cue_tail(tok) == " "
    ids = value_token_ids(tok)
    assert [tok.decode(i) for i in ids] == [str(v) for v in range(6)] and all(len(i) == 1 for i in ids)
    assert tok("Score: ", add_special_tokens=False)["input_ids"] + ids[4] == \
        tok("Score: 4", add_special_tokens=False)["input_ids"]
    assert not [i for i in range(len(tok)) if tok.decode([i]) in {f" {v}" for v in range(6)}]


def test_a_tokenizer_that_merges_space_and_digit():
    """A byte-level BPE trained here so that " 4" is one token: the cue ends at the colon (no space) and each
    value collects both its ids, "4" and " 4"."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([f"Score: {d} of 5. Score:{d}" for d in range(6)] * 50, vocab_size=300, min_frequency=2,
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    assert tok.convert_ids_to_tokens(tok("Score: 4", add_special_tokens=False)["input_ids"])[-1] == "Ġ4"
    assert cue_tail(tok) == ""
    assert [sorted(tok.decode([i]) for i in ids) for ids in value_token_ids(tok)] == \
        [[f" {v}", str(v)] for v in range(6)]


# ---------------------------------------------------------------------------- the cue
@pytest.mark.parametrize(("text", "prefix"), [
    ("Relevant.\nScore: 4", "Relevant.\nScore:"),
    ("**Score:** 3\nDone.", "**Score:**"),
    ("**Score**: 3", "**Score**:"),
    ("SCORE: 2", "SCORE:"),
    ("score: 1 at first; on reflection Score: 4", "score: 1 at first; on reflection Score:"),  # the last cue
    ("Ends with the cue. Score:", "Ends with the cue. Score:"),
    ("Final Score: 5", "Final Score:"),
])
def test_the_cue_is_found_in_the_judge_text(text, prefix):
    assert judge_prefix(text) == (prefix, text, False)


@pytest.mark.parametrize("text", ["", "No verdict.", "underscore: 3", "Score 4", "Scores: 4", "Score - 4"])
def test_without_the_literal_cue_it_is_appended_and_marked(text):
    assert find_score_cue(text) is None
    assert judge_prefix(text) == (text + "\nScore:", text + APPENDED, True)


# ---------------------------------------------------------------------------- against a hand computation
def test_cue_appended_matches_a_hand_computation(tmp_path, tiny_model, hf):
    """The real generation path: the random tiny model writes 3 tokens of junk (no cue), so the cue is appended
    to every output; reward and confidence equal a plain forward pass over prompt + text + "\\nScore: "."""
    table = responses()
    resp = io.write_table(table, tmp_path / "r", "responses")
    s = label(resp, LabelConfig(model=str(tiny_model), reward="judge", judge_max_new_tokens=3, batch_size=4),
              tmp_path / "out")
    rows = judge_rows(tmp_path / "out")
    assert len(rows) == 9 and s.judge_appended == 9 and s.judge_unparsed == 0
    for row, src in zip(rows, table.to_pylist()):
        assert (row["prompt_id"], row["response_idx"]) == (src["prompt_id"], src["response_idx"])
        assert row["judge_text"].endswith(APPENDED)
        seen = row["judge_text"][: -len(APPENDED)] + "\nScore: "
        reward, mass = by_hand(hf, JUDGE_PROMPT, src["prompt"][0]["content"], src["response"], seen)
        assert row["reward"] == pytest.approx(reward, abs=1e-5)
        assert row["confidence"] == pytest.approx(mass, rel=1e-4, abs=1e-9)
        assert 0.0 <= row["reward"] <= 5.0 and 0.0 < row["confidence"] <= 1.0


STUB = {  # judge text the stubbed generation writes → what the model reads before the score (cue + space)
    "Relevant and brief.\n**Score:** 3\nDone.": "Relevant and brief.\n**Score:** ",
    "score: 2 at first.\nOn reflection, Score: 4": "score: 2 at first.\nOn reflection, Score: ",
    "Ends with the cue. Score:": "Ends with the cue. Score: ",
    "It is fine but": "It is fine but\nScore: ",  # no cue: appended
}


def test_cue_found_in_the_generation_matches_a_hand_computation(tmp_path, tiny_model, hf, monkeypatch):
    """The found path, end to end through `label` with a custom template: the generation is *stubbed* (a random
    model never writes "Score:"), returning judge texts with the cue in the middle, in bold, twice, at the very
    end, or not at all; the expected-score forward pass is the real one on the tiny model (batched, padded)."""
    from cream_data.engines import hf_sample
    from cream_data.engines.base import Generation

    template = "Rate it.\nQ: {request}\nA: {response}\nEnd with Score: <0-5>. {{braces}} stay literal."
    (tmp_path / "judge.txt").write_text(template, encoding="utf-8")
    texts, seen_contents = list(STUB), []

    def generate(self, prompts, seeds, n, params):
        seen_contents.extend(p[-1]["content"] for p in prompts)
        return [[Generation(texts[(len(seen_contents) - len(prompts) + k) % len(texts)], "stop", 5)]
                for k in range(len(prompts))]

    monkeypatch.setattr(hf_sample.HfSampler, "generate", generate)
    table = responses()
    resp = io.write_table(table, tmp_path / "r", "responses")
    cfg = LabelConfig(model=str(tiny_model), reward="judge", judge_template=str(tmp_path / "judge.txt"), batch_size=3)
    s = label(resp, cfg, tmp_path / "out")
    assert all(c.startswith("Rate it.\nQ: What is") and "{braces} stay literal" in c for c in seen_contents)
    rows = judge_rows(tmp_path / "out")
    stored = {t: t if not t.startswith("It is fine") else t + APPENDED for t in STUB}
    assert {r["judge_text"] for r in rows} == set(stored.values())
    assert s.judge_appended == sum(r["judge_text"].endswith(APPENDED) for r in rows) > 0
    for row, src in zip(rows, table.to_pylist()):
        text = row["judge_text"].removesuffix(APPENDED)
        reward, mass = by_hand(hf, template, src["prompt"][0]["content"], src["response"], STUB[text])
        assert row["reward"] == pytest.approx(reward, abs=1e-5)
        assert row["confidence"] == pytest.approx(mass, rel=1e-4, abs=1e-9)
    config = io.read_manifest(tmp_path / "out" / "scores")["config"]
    assert config["judge_mode"] == "expected" and config["judge_template"] == str(tmp_path / "judge.txt")
    assert config["judge_template_hash"] == hashlib.sha256(template.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- expected vs parse on the tiny model
def test_expected_mode_scores_every_response_and_pairs_form(tmp_path, tiny_model):
    """Random weights: parse mode gets (almost) no score and no pair; expected mode a finite reward for 100 % of
    the responses, each prompt with distinct rewards, so every prompt pairs."""
    from tests.support.tables import responses_table

    resp = io.write_table(responses_table(n_prompts=4, n=4), tmp_path / "r", "responses")
    common = dict(model=str(tiny_model), reward="judge", judge_max_new_tokens=6)
    parse = label(resp, LabelConfig(**common, judge_mode="parse"), tmp_path / "parse")
    expected = label(resp, LabelConfig(**common), tmp_path / "expected")
    p_rows, e_rows = judge_rows(tmp_path / "parse"), judge_rows(tmp_path / "expected")
    assert sum(r["reward"] is None for r in p_rows) >= 0.8 * len(p_rows) and parse.judge_unparsed > 0
    assert all(r["confidence"] is None for r in p_rows)
    assert len(e_rows) == 16 and all(r["reward"] is not None and np.isfinite(r["reward"]) for r in e_rows)
    assert all(0.0 <= r["confidence"] <= 1.0 for r in e_rows) and expected.judge_unparsed == 0
    assert expected.pairing.pairs == 4 and parse.pairing.pairs < expected.pairing.pairs
    prefs = io.read_table(tmp_path / "expected" / "preferences", "preferences").to_pylist()
    for p in prefs:
        assert p["rewards"][p["chosen_idx"]] == max(p["rewards"]) > min(p["rewards"]) == p["rewards"][p["rejected_idx"]]
    assert io.read_manifest(tmp_path / "parse" / "scores")["config"]["judge_mode"] == "parse"


# ---------------------------------------------------------------------------- bad templates and modes
BAD_TEMPLATES = [
    ("no-response.txt", "Q: {request}", ["no-response.txt", "no {response} placeholder"]),
    ("twice.txt", "{request} and again {request}; {response}", ["twice.txt", "{request} appears 2 times"]),
    ("unknown.txt", "{request} {response} {score}", ["unknown.txt", "unknown placeholder {score}"]),
    ("positional.txt", "{request} {response} {}", ["positional.txt", "unknown placeholder {}"]),
    ("format-spec.txt", "{request:>10} {response}", ["format-spec.txt", "unknown placeholder {request:>10}"]),
    ("unclosed.txt", "{request} {response} {oops", ["unclosed.txt", "malformed braces"]),
    ("stray.txt", "{request} {response} }", ["stray.txt", "malformed braces"]),
    ("latin1.txt", "caf\xe9 {request} {response}".encode("latin-1"), ["latin1.txt", "not UTF-8"]),
    ("missing.txt", None, ["missing.txt", "file not found"]),
]


def test_template_problems_in_python():
    assert template_problem(JUDGE_PROMPT) is None
    assert template_problem("{{request}} {request} {response} {{x}}") is None  # escaped braces are literal text


@pytest.mark.parametrize(("name", "content", "needles"), BAD_TEMPLATES, ids=[b[0] for b in BAD_TEMPLATES])
def test_bad_judge_templates_are_one_line_errors(tmp_path, cream_exe, tiny_model, name, content, needles):
    resp = io.write_table(responses(1, 2), tmp_path / "r", "responses")
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif content is not None:
        path.write_bytes(content)
    before = snapshot(tmp_path)
    r = cream_exe("label", resp, "--model", tiny_model, "--reward", "judge", "--judge-template", path,
                  "--out", tmp_path / "out")
    assert_user_error(r, "--judge-template", *needles)
    assert snapshot(tmp_path) == before


def test_bad_judge_mode_is_a_one_line_error(tmp_path, cream_exe, tiny_model):
    resp = io.write_table(responses(1, 2), tmp_path / "r", "responses")
    before = snapshot(tmp_path)
    r = cream_exe("label", resp, "--model", tiny_model, "--reward", "judge", "--judge-mode", "sampled",
                  "--out", tmp_path / "out")
    assert_user_error(r, "--judge-mode: got 'sampled'", "expected, parse")
    assert snapshot(tmp_path) == before


def test_run_config_label_section(tmp_path, tiny_model):
    """`label: {judge_mode, judge_template}` in `cream run`: the template path is relative to the config file and
    checked by the label stage's own config; the template's hash is part of the label stage's fingerprint."""
    from cream_data.errors import CreamError
    from cream_train.run.config import load_run_config
    from tests.support.runs import tiny_run_config

    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "judge.txt").write_text("Grade {response} for {request}.", encoding="utf-8")
    cfg = tiny_run_config(model=tiny_model, run_dir=tmp_path / "run")
    cfg["method"] = "srlm"
    cfg["label"].update(judge_mode="parse", judge_template="prompts/judge.txt")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run, _, _ = load_run_config(path)
    assert run.label.judge_mode == "parse"
    assert run.label.judge_template == str((tmp_path / "prompts" / "judge.txt").resolve())
    cfg["label"].update(judge_mode="logits", judge_template="prompts/missing.txt")
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(CreamError) as e:
        load_run_config(path)
    assert "label.judge_mode: got 'logits'" in str(e.value)
    assert f"label.judge_template: {(tmp_path / 'prompts' / 'missing.txt').resolve()}: file not found" in str(e.value)


def test_loop_fingerprint_follows_the_template_content(tmp_path, tiny_model, monkeypatch):
    """The label stage's inputs carry the template's hash: the same path with other content is another stage."""
    from cream_train.run.manifest import Manifest
    from cream_train.run.stage_defs import label
    from cream_train.run.walk import StageWalk
    from cream_train.run.config import load_run_config
    from tests.support.runs import tiny_run_config

    (tmp_path / "judge.txt").write_text("A {request} {response}", encoding="utf-8")
    cfg = tiny_run_config(model=tiny_model, run_dir=tmp_path / "run")
    cfg["method"] = "srlm"
    cfg["label"]["judge_template"] = "judge.txt"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run, _, table = load_run_config(path)
    walk = StageWalk(run, table, Manifest.open(run.run_dir, writable=False))
    walk.fps.update({"sample-1": "x", "train-M1": "y"})
    a = label(walk, 1).inputs
    (tmp_path / "judge.txt").write_text("B {request} {response}", encoding="utf-8")
    b = label(walk, 1).inputs
    assert a["judge_template"] == b["judge_template"] and a["judge_template_fp"] != b["judge_template_fp"]
    assert json.dumps(a, default=str) != json.dumps(b, default=str) and os.path.isabs(a["judge_template"])
