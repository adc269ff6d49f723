"""Issue #26, fourth round, through the installed `cream` script: a model is what its role needs, judged before any
work starts. A config.json with a model_type transformers does not know is one line (no transformers warning first);
a folder without weights is refused by `cream sample/label/eval/train` and `cream run --check` before any work, naming
the flag; `cream run --check` judges M0 as a policy, naming ``model``; messages about a reward model name the flag
(``--reward-model``) or the run config's key (``label.reward_model``) that gave it.

Every refusal is one stderr line, exit 2, no traceback, nothing new on disk."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest

from cream_data.engines import models
from cream_data.errors import CreamError
from cream_data.tables import io
from tests.support import REPO
from tests.support.cli import assert_user_error, snapshot
from tests.support.models import make_tiny_model
from tests.support.runs import tiny_run_config, write_yaml

NO_WEIGHTS = ["the folder has no weights", "model.safetensors", "pytorch_model.bin"]
EVAL_DATA = REPO / "examples" / "data" / "eval"


@pytest.fixture(scope="module")
def broken(tmp_path_factory, tiny_model):
    """Checkpoints built from the tiny model that no stage may start work with: an unknown model_type, a policy and
    a reward model without weights, a reward model with truncated weights, a reward model, a policy without
    tokenizer files."""
    root = tmp_path_factory.mktemp("broken")

    def copy(src, name, drop=()):
        dst = shutil.copytree(src, root / name)
        for f in dst.iterdir():
            if f.name.startswith(drop):
                f.unlink()
        return dst

    unknown = copy(tiny_model, "unknown-type")
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "nosuchmodel"}))
    rm = make_tiny_model(root / "rm", seed=5, num_labels=1)
    copy(tiny_model, "no-weights", drop=("model",))
    copy(rm, "rm-no-weights", drop=("model",))
    truncated = copy(rm, "rm-truncated") / "model.safetensors"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    copy(tiny_model, "no-tokenizer", drop=("tokenizer", "special_tokens", "chat_template", "vocab", "merges"))
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model):
    """A prompts table, a responses table and the preferences `cream label` makes of it (tiny model, DPO reward)."""
    from cream_data.stages.label import LabelConfig, label

    tmp_path = tmp_path_factory.mktemp("inputs")
    prompts = pa.table({"prompt_id": ["p1", "p2"], "prompt": [[{"role": "user", "content": f"What is {i} + {i}?"}]
                                                              for i in (1, 2)], "source": ["t", "t"],
                        "reference_answer": pa.array([None, None], pa.string())})
    rows = [{"prompt_id": pid, "prompt": [{"role": "user", "content": f"What is {pid[-1]} + {pid[-1]}?"}],
             "response_idx": i, "response": text, "model": "m", "iteration": 1, "seed": 0, "temperature": 0.8,
             "top_p": 0.95, "max_new_tokens": 32, "finish_reason": "stop", "n_tokens": 5}
            for pid, texts in {"p1": ["Answer: 2", "Answer: 3"], "p2": ["Answer: 4", "It is five."]}.items()
            for i, text in enumerate(texts)]
    resp = io.write_table(pa.Table.from_pylist(rows), tmp_path / "responses", "responses")
    label(resp, LabelConfig(model=str(tiny_model)), tmp_path / "labeled")
    return {"prompts": io.write_table(prompts, tmp_path / "prompts", "prompts"), "responses": resp,
            "preferences": tmp_path / "labeled" / "preferences"}


def _refused(cream_exe, tmp_path, *args, needles):
    before = snapshot(tmp_path)
    r = cream_exe(*args, cwd=tmp_path)
    assert_user_error(r, *needles)
    assert snapshot(tmp_path) == before, f"`cream {args[0]}` changed files"
    return r


def _run_config(tmp_path, model, **label) -> str:
    """TMP/cfg.yaml, a tiny run of ``model`` (method rm when ``label`` names the reward model), as its relative path."""
    write_yaml(tmp_path / "cfg.yaml", tiny_run_config(model=model, method="rm" if label else "cream",
                                                      run_dir=tmp_path / "run", label=label))
    return "cfg.yaml"


def test_an_unknown_model_type_is_one_line(tmp_path, cream_exe, broken, inputs):
    """Item 1: the error line alone, not transformers' "You are using a model of type …" warning before it."""
    m = broken / "unknown-type"
    r = _refused(cream_exe, tmp_path, "sample", inputs["prompts"], "--model", m, "--n", "2", "--out", "o",
                 needles=[f"--model {m}", "model_type 'nosuchmodel'", "transformers", "does not know"])
    assert "You are using" not in r.err


def test_a_folder_without_weights_is_refused_before_any_work(tmp_path, cream_exe, broken, inputs, tiny_model):
    """Item 2: each stage refuses it up front (no late "cannot load (Error no file named …)"), naming the flag."""
    m, rm = broken / "no-weights", broken / "rm-no-weights"
    for args in [("sample", inputs["prompts"], "--model", m, "--n", "2", "--max-new-tokens", "4", "--out", "o"),
                 ("label", inputs["responses"], "--model", m, "--out", "o"),
                 ("eval", "--model", m, "--tasks", "gsm8k", "--limit", "2", "--data-dir", EVAL_DATA, "--out", "o"),
                 ("train", inputs["preferences"], "--model", m, "--out", "o")]:
        _refused(cream_exe, tmp_path, *args, needles=[f"--model {m}:", *NO_WEIGHTS])
    _refused(cream_exe, tmp_path, "label", inputs["responses"], "--model", tiny_model, "--reward", "rm",
             "--reward-model", rm, "--out", "o", needles=[f"--reward-model {rm}:", *NO_WEIGHTS])
    _refused(cream_exe, tmp_path, "run", _run_config(tmp_path, tiny_model, reward_model=str(rm)), "--check",
             needles=["label.reward_model", str(rm), *NO_WEIGHTS])


def test_run_check_judges_m0_as_a_policy(tmp_path, cream_exe, broken):
    """Items 2 and 3: `cream run --check` refuses an M0 without weights, a reward model as M0 and an M0 without
    tokenizer files (method cream: no reward model configured), each line naming ``model``."""
    cases = [("no-weights", NO_WEIGHTS), ("rm", ["LlamaForSequenceClassification", "not a causal language model"]),
             ("no-tokenizer", ["no tokenizer files"])]
    for name, needles in cases:
        r = _refused(cream_exe, tmp_path, "run", _run_config(tmp_path, broken / name), "--check",
                     needles=[f"cfg.yaml: 1 problem(s): model {broken / name}:", *needles])
        assert "reward_model" not in r.err


def test_reward_model_messages_name_the_flag(tmp_path, cream_exe, broken, inputs, tiny_model):
    """Item 4: `--reward-model PATH: …` as `--model PATH: …` (a causal LM, a truncated download refused before the
    policy is scored: no logps/ cache); in a run config `label.reward_model PATH: …`."""
    for rm, needles in [(tiny_model, ["not a sequence-classification reward model"]),
                        (broken / "rm-truncated", ["cannot load its weights", "model.safetensors",
                                                   "incomplete or corrupt"])]:
        _refused(cream_exe, tmp_path, "label", inputs["responses"], "--model", tiny_model, "--reward", "rm",
                 "--reward-model", rm, "--out", "o", needles=[f"--reward-model {rm}:", *needles])
    problem = models.reward_model_problem(str(broken / "rm-no-weights"))
    assert problem.startswith(f"label.reward_model {broken / 'rm-no-weights'}: the folder has no weights"), problem
    assert models.reward_model_problem(str(broken / "rm")) is None
    assert models.reward_model_problem(str(tmp_path / "nowhere")).startswith(f"label.reward_model: model {tmp_path}")


def test_sharded_weights_need_every_shard(tmp_path, tiny_model):
    """A sharded checkpoint whose index names a file that is not there is refused by the role check, not by the load."""
    m = shutil.copytree(tiny_model, tmp_path / "sharded")
    (m / "model.safetensors").rename(m / "model-00001-of-00002.safetensors")
    (m / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    ref = models.resolve(str(m))
    with pytest.raises(CreamError, match=r"--model .*sharded: model.safetensors.index.json names 2 weights file\(s\) "
                                         r"and model-00002-of-00002.safetensors is not in the folder"):
        models.check_weights(ref)
    models.check_policy_files(models.resolve(str(tiny_model)))  # a whole checkpoint passes


def test_what_the_files_show_is_refused_before_transformers_is_imported(broken):
    """A folder without weights or tokenizer files, or a policy given as a reward model, is refused from the files
    alone: the role checks import neither transformers nor torch for it (an error in ~0.3 s, not ~3)."""
    import subprocess
    import sys

    code = ("import sys; from cream_data.engines import models; from cream_data.errors import CreamError\n"
            "for check, name in [(models.check_policy, 'no-weights'), (models.check_policy, 'no-tokenizer'),\n"
            "                    (models.check_reward_model, 'rm-no-weights'), (models.check_reward_model, 'no-weights')]:\n"
            f"    try:\n        check(models.resolve({str(broken)!r} + '/' + name))\n"
            "    except CreamError as e:\n        print(str(e).split(': ', 1)[1][:30])\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.splitlines() == ["the folder has no weights (exp", "the folder has no tokenizer fi",
                                "the folder has no weights (exp", "a LlamaForCausalLM checkpoint,", "[]"]
