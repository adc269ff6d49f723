"""Class "role": a model is what its role needs — a policy is a causal LM with a tokenizer, a reward model a
one-logit sequence classifier whose embedding covers its tokenizer — judged before any work starts."""

from __future__ import annotations

import json
import shutil

from bench.hostile.helpers import DATA, refuse, run_config

R = "role"


def _model(name, breaker=None):
    """The fixture model ``name`` copied into ``d`` and broken by ``breaker(folder)``."""
    def make(d, w):
        if breaker is None:
            return getattr(w, name)
        m = w.copy(name, d, "m")
        breaker(m)
        return m
    return make


def _no_weights(m):
    for f in m.glob("*.safetensors"):
        f.unlink()


def _bad_config(m):
    (m / "config.json").write_text("{not json")


def _half_weights(m):
    f = next(m.glob("*.safetensors"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])


def _unknown_arch(m):
    cfg = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**cfg, "model_type": "nosuchmodel", "architectures": ["NoSuch"]}))


def _empty(m):
    for f in list(m.iterdir()):
        (shutil.rmtree if f.is_dir() else f.unlink)(f)


def cmd(kind, model):
    def setup(d, w):
        m = model(d, w)
        if kind == "run":
            run_config(d, w, model=str(m))
        elif kind == "run_rm":
            run_config(d, w, method="rm", label=f"{{reward_model: {m}}}")
        return {
            "sample": ["sample", w.prompts, "--out", d / "o", "--model", m, "--max-new-tokens", "4"],
            "label": ["label", w.responses, "--out", d / "o", "--model", m],
            "ref": ["label", w.responses, "--out", d / "o", "--model", w.tiny, "--ref", m],
            "prev": ["label", w.responses, "--out", d / "o", "--model", w.tiny, "--prev-model", m],
            "rm": ["label", w.responses, "--out", d / "o", "--model", w.tiny, "--reward-model", m],
            "train": ["train", w.labeled, "--model", m, "--out", d / "out", "--max-steps", "1"],
            "eval": ["eval", "--model", m, "--out", d / "o", "--tasks", "arc_easy", "--limit", "1", "--data-dir",
                     DATA / "eval"],
            "run": ["run", "c.yaml", "--check"],
            "run_rm": ["run", "c.yaml", "--check"],
        }[kind]
    return setup


def _file_as_model(d, w):
    (d / "model.bin").write_bytes(b"\0" * 64)
    return d / "model.bin"


CASES = [
    refuse(R, "sample: a reward model as the policy", cmd("sample", _model("rm")), "causal"),
    refuse(R, "label --model: a reward model", cmd("label", _model("rm")), "causal"),
    refuse(R, "label --ref: a reward model", cmd("ref", _model("rm")), "--ref"),
    refuse(R, "label --prev-model: a reward model", cmd("prev", _model("rm")), "--prev-model"),
    refuse(R, "label --reward-model: a causal LM", cmd("rm", _model("tiny")), "--reward-model"),
    refuse(R, "label --reward-model: two logits", cmd("rm", _model("rm2")), "--reward-model"),
    refuse(R, "label --reward-model: embedding smaller than its tokenizer", cmd("rm", _model("rm_small_vocab")),
           "vocab"),
    refuse(R, "label --reward-model: no tokenizer files", cmd("rm", _model("rm", lambda m: [
        f.unlink() for f in m.iterdir() if f.name.startswith(("tokenizer", "special_tokens", "chat_template"))])),
        "tokenizer"),
    refuse(R, "sample: a policy without tokenizer files", cmd("sample", _model("no_tokenizer")), "tokenizer"),
    refuse(R, "label --prev-model: without tokenizer files", cmd("prev", _model("no_tokenizer")), "tokenizer"),
    refuse(R, "train: a reward model as the start", cmd("train", _model("rm")), "causal"),
    refuse(R, "eval: a reward model", cmd("eval", _model("rm")), "causal"),
    refuse(R, "run: M0 a reward model (--check)", cmd("run", _model("rm")), "model"),
    refuse(R, "run: M0 without tokenizer files (--check)", cmd("run", _model("no_tokenizer")), "tokenizer"),
    refuse(R, "run: label.reward_model a causal LM (--check)", cmd("run_rm", _model("tiny")), "reward_model"),
    refuse(R, "sample: a model folder without weights", cmd("sample", _model("tiny", _no_weights)), "safetensors"),
    refuse(R, "label: config.json that is not JSON", cmd("label", _model("tiny", _bad_config)), "config.json"),
    refuse(R, "sample: truncated safetensors", cmd("sample", _model("tiny", _half_weights)), "safetensors"),
    refuse(R, "sample: an unknown architecture", cmd("sample", _model("tiny", _unknown_arch)), "nosuchmodel"),
    refuse(R, "sample: an empty folder", cmd("sample", _model("tiny", _empty)), "m"),
    refuse(R, "sample: a file as the model", cmd("sample", _file_as_model), "model.bin"),
    refuse(R, "sample: an unknown alias", cmd("sample", lambda d, w: "no-such-model-alias"), "no-such-model-alias"),
    refuse(R, "train: a model folder without weights", cmd("train", _model("tiny", _no_weights)), "safetensors"),
]
