"""Issue #26, third round, through the installed `cream` script: a model is what its role needs (a policy is a causal
LM with a chat template, a reward model a one-logit classifier whose embedding covers its tokenizer), judged before
any work; oracle labels need reference answers; whitespace-only responses are scored; and a key means one thing
where tables meet (a prompt_id names one prompt in the responses, in each pool and across them).

Every refusal is one stderr line, exit 2, no traceback, nothing new on disk."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest

from cream_data.engines import models
from cream_data.tables import io
from tests.support.answers import ANSWERS, responses_table
from tests.support.cli import assert_user_error, snapshot
from tests.support.models import make_tiny_model
from tests.support.runs import tiny_run_config, write_yaml

POLICY_REFUSED = ["LlamaForSequenceClassification", "not a causal language model"]


def prompts_table(reference_answers: list[str | None]) -> pa.Table:
    """The prompts of :data:`ANSWERS` with these reference answers."""
    return pa.table({"prompt_id": ["p1", "p2"], "prompt": [[{"role": "user", "content": f"What is {i} + {i}?"}]
                                                           for i in (1, 2)],
                     "source": ["t", "t"], "reference_answer": pa.array(reference_answers, pa.string())})


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tiny_model):
    """Checkpoints that are not what a role needs: a reward model (as a policy), a policy without tokenizer files,
    a reward model whose embedding is smaller than its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("roles")
    rm = make_tiny_model(root / "rm", seed=5, num_labels=1)
    no_tok = root / "no-tokenizer"
    shutil.copytree(tiny_model, no_tok)
    for f in no_tok.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges")):
            f.unlink()
    small = AutoModelForSequenceClassification.from_pretrained(rm)
    small.resize_token_embeddings(small.config.vocab_size - 64)
    small.save_pretrained(root / "rm-small-vocab")
    for f in rm.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, root / "rm-small-vocab" / f.name)
    return root


def _refused(cream_exe, tmp_path, *args, needles):
    before = snapshot(tmp_path)
    r = cream_exe(*args, cwd=tmp_path)
    assert_user_error(r, *needles)
    assert snapshot(tmp_path) == before, f"`cream {args[0]}` changed files"


def _run_config(tmp_path, model, **label) -> str:
    """TMP/cfg.yaml, a tiny run of ``model`` (method rm when ``label`` names the reward model), as its relative path."""
    write_yaml(tmp_path / "cfg.yaml", tiny_run_config(model=model, method="rm" if label else "cream",
                                                      run_dir=tmp_path / "run", label=label))
    return "cfg.yaml"


def test_a_reward_model_is_no_policy(tmp_path, cream_exe, tiny_model, models_dir):
    """Item 3: a sequence classifier as the policy is refused by every stage and by `cream run --check`."""
    from cream_data.stages.label import LabelConfig, label

    rm = models_dir / "rm"
    resp = io.write_table(responses_table(ANSWERS), tmp_path / "responses", "responses")
    label(resp, LabelConfig(model=str(tiny_model)), tmp_path / "labeled")
    prompts = io.write_table(prompts_table([None, None]), tmp_path / "prompts", "prompts")
    for args, flag in [(["label", resp, "--model", rm, "--out", "o"], "--model"),
                       (["sample", prompts, "--model", rm, "--n", "1", "--out", "o"], "--model"),
                       (["train", tmp_path / "labeled" / "preferences", "--model", rm, "--out", "o"], "model"),
                       (["run", _run_config(tmp_path, rm), "--check"], "model")]:
        _refused(cream_exe, tmp_path, *args, needles=[f"{flag} {rm}", *POLICY_REFUSED])


def test_a_model_folder_without_tokenizer_files(tmp_path, cream_exe, tiny_model, models_dir):
    """Item 7: one line naming the folder, as --reward-model, as --model, and as a run's M0 (`--check` refuses)."""
    no_tok = models_dir / "no-tokenizer"
    resp = io.write_table(responses_table(ANSWERS), tmp_path / "responses", "responses")
    needles = [str(no_tok), "no tokenizer files", "tokenizer.json"]
    _refused(cream_exe, tmp_path, "label", resp, "--model", tiny_model, "--reward-model", no_tok, "--out", "o",
             needles=["--reward-model", *needles])
    _refused(cream_exe, tmp_path, "label", resp, "--model", no_tok, "--out", "o", needles=["--model", *needles])
    _refused(cream_exe, tmp_path, "run", _run_config(tmp_path, no_tok), "--check", needles=["model", *needles])


def test_a_reward_model_smaller_than_its_tokenizer(tmp_path, cream_exe, tiny_model, models_dir):
    """Item 8: refused before the policy is scored (no logps/ or rm/ cache left behind), and by `cream run --check`."""
    small = models_dir / "rm-small-vocab"
    resp = io.write_table(responses_table(ANSWERS), tmp_path / "responses", "responses")
    n_tok = len(models.check_policy(models.resolve(str(tiny_model))))
    needles = [f"tokenizer has {n_tok} tokens", f"embedding only {n_tok - 64} rows", "vocab_size"]
    _refused(cream_exe, tmp_path, "label", resp, "--model", tiny_model, "--reward", "rm", "--reward-model", small,
             "--out", "o", needles=[f"--reward-model {small}", *needles])
    _refused(cream_exe, tmp_path, "run", _run_config(tmp_path, tiny_model, reward_model=str(small)), "--check",
             needles=[f"label.reward_model {small}", *needles])


def test_oracle_needs_a_reference_answer_for_every_prompt(tmp_path, cream_exe, tiny_model):
    """Item 4: refused up front, naming the prompts without one, instead of an empty table 'nonfinite_reward'."""
    resp = io.write_table(responses_table(ANSWERS), tmp_path / "responses", "responses")
    for name, refs, needles in [
        ("none", [None, None], ["2 of the 2 labeled prompts have no reference_answer", "'p1', 'p2'"]),
        ("one", ["2", "  "], ["1 of the 2 labeled prompts have no reference_answer", "prompt_id 'p2'"]),
    ]:
        prompts = io.write_table(prompts_table(refs), tmp_path / name, "prompts")
        _refused(cream_exe, tmp_path, "label", resp, "--model", tiny_model, "--reward", "oracle", "--prompts", prompts,
                 "--out", "o", needles=[str(prompts), *needles, "oracle"])


def test_whitespace_and_empty_responses_are_scored(tmp_path, cream_exe, tiny_model):
    """Item 9: a whitespace-only response (the template merges it with the generation prompt's last token) and an
    empty one are scored like any other, with the trainer's token split; the table is labeled whole."""
    from cream_train.prefs import response_token_ids

    texts = {"p1": ["Answer: 2", "   ", ""], "p2": ["\n", "Answer: 4", " \t "]}
    resp = io.write_table(responses_table(texts), tmp_path / "responses", "responses")
    r = cream_exe("label", resp, "--model", tiny_model, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.code == 0 and "Traceback" not in r.err, r
    scores = io.read_table(tmp_path / "o" / "scores", "scores").sort_by([("prompt_id", "ascending"),
                                                                         ("response_idx", "ascending")])
    assert scores.num_rows == 6 and np.isfinite(scores["reward"].to_numpy()).all()
    tok = models.check_policy(models.resolve(str(tiny_model)))
    trainer = [len(response_token_ids(tok, [{"role": "user", "content": f"What is {p[-1]} + {p[-1]}?"}],
                                      [{"role": "assistant", "content": t}])[1])
               for p, ts in texts.items() for t in ts]
    assert scores["n_tokens"].to_pylist() == trainer  # the stored log-probs stay a valid DPO reference
    assert io.read_table(tmp_path / "o" / "preferences", "preferences").num_rows == 2


def test_a_prompt_id_names_one_prompt_where_tables_meet(tmp_path, cream_exe, tiny_model):
    """Item 2: --chosen-from/--rejected-from pools that are not responses to the input's prompts are refused, and so
    are a responses table naming two prompts under one prompt_id and a --prompts table (its reference answers)
    naming another prompt under a prompt_id of the responses."""
    def w(table, name):
        return io.write_table(table, tmp_path / name, "responses")

    resp = w(responses_table(ANSWERS), "responses")
    pool = w(responses_table({"p1": ["Answer: 9"], "p2": ["Answer: 8"]}), "pool")
    other = w(responses_table({"p1": ["Answer: 9"]}, prompt=lambda pid: "Name a colour."), "other-prompt")
    elsewhere = w(responses_table({"q7": ["Answer: 9"]}), "no-common-prompt")
    two = w(responses_table(ANSWERS).set_column(1, "prompt", pa.array(
        [[{"role": "user", "content": c}] for c in ["What is 1 + 1?", "What is 1 + 2?", "What is 2 + 2?", "x"]])),
        "two-prompts")
    answers_elsewhere = io.write_table(prompts_table(["2", "4"]).set_column(1, "prompt", pa.array(
        [[{"role": "user", "content": c}] for c in ["What is 1 + 1?", "What is 3 + 3?"]])), tmp_path / "prompts",
        "prompts")
    cases = [
        ([resp, "--reward", "oracle", "--prompts", answers_elsewhere],
         [str(answers_elsewhere), "prompt_id 'p2' is another prompt than in the responses", "'What is 3 + 3?'"]),
        ([resp, "--chosen-from", other], ["--chosen-from", str(other), "prompt_id 'p1' is another prompt", str(resp),
                                          "'Name a colour.'"]),
        ([resp, "--rejected-from", resp], ["--rejected-from", "is the input"]),
        ([resp, "--chosen-from", pool, "--rejected-from", pool], ["--rejected-from", "also given as --chosen-from"]),
        ([resp, "--rejected-from", elsewhere], [str(elsewhere), "none of its prompt_ids is a prompt of", "'q7'"]),
        ([two], [str(two), "prompt_id 'p1' names two different prompts", "'What is 1 + 1?'", "'What is 1 + 2?'"]),
    ]
    for args, needles in cases:
        _refused(cream_exe, tmp_path, "label", *args, "--model", tiny_model, "--out", "o", needles=needles)
