"""Training precision and the `dtype` of every model stage, checked on CPU in bf16 (how the GPU numerics are tested
here): mixed precision keeps the small updates of the paper's lr 1e-6 in the saved checkpoint, pure bf16 loses them;
`--dtype` and `train.dtype` run end to end and are recorded; a bad dtype is one line.

The "moved" fraction compares the saved weights with the starting weights *as held in the saved dtype*, so rounding
fp32 weights to bf16 on save is not counted as movement.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.cli import assert_user_error, cream_executable
from tests.support.runs import write_tiny_run_config
from tests.support.training import make_preferences

STEPS = 5
LR = 1e-6


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _delta(start: dict, end: dict):
    """The flattened update, in float64, against the start rounded to the saved dtype."""
    import torch

    return torch.cat([(end[k].double() - start[k].to(end[k].dtype).double()).flatten() for k in sorted(start)])


@pytest.fixture(scope="module")
def prefs(tiny_model, tmp_path_factory):
    return make_preferences(tmp_path_factory.mktemp("prec") / "preferences", tiny_model)


def _train(tiny_model, prefs, out: Path, **kw):
    from cream_train.config import DPOTrainConfig
    from cream_train.train import train

    return train(DPOTrainConfig(data=str(prefs), model=str(tiny_model), out=str(out), batch_size=1, max_steps=STEPS,
                                warmup_ratio=0.0, lr=LR, **kw))


@pytest.fixture(scope="module")
def runs(tiny_model, prefs, tmp_path_factory):
    """Five DPO steps at lr 1e-6 from the same start: fp32, the default GPU policy forced on CPU (`--dtype bf16`,
    through the installed console script), and the pure-bf16 opt-in."""
    root = tmp_path_factory.mktemp("prec-runs")
    fp32 = _train(tiny_model, prefs, root / "fp32", dtype="fp32")
    pure = _train(tiny_model, prefs, root / "pure", dtype="bf16", precision="pure")
    record = root / "record.json"
    import subprocess

    res = subprocess.run([str(cream_executable()), "train", str(prefs), "--model", str(tiny_model), "--out",
                          str(root / "mixed"), "--dtype", "bf16", "--batch-size", "1", "--max-steps", str(STEPS),
                          "--warmup-ratio", "0", "--lr", str(LR)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "CREAM_RESULT_FILE": str(record)}, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    return {"start": _weights(tiny_model), "fp32": (root / "fp32", fp32.precision),
            "pure": (root / "pure", pure.precision), "mixed": (root / "mixed", json.loads(record.read_text())),
            "log": res.stderr}


def test_mixed_bf16_keeps_the_small_updates_in_the_saved_checkpoint(runs):
    import torch

    folder, record = runs["mixed"]
    saved = _weights(folder)
    assert {t.dtype for t in saved.values()} == {torch.float32}  # the master precision, not a bf16 cast
    assert json.loads((folder / "config.json").read_text()).get("dtype", "float32") == "float32"
    d_mixed = _delta(runs["start"], saved)
    d_fp32 = _delta(runs["start"], _weights(runs["fp32"][0]))
    moved = (d_mixed != 0).double().mean().item()
    assert moved >= 0.90, f"only {moved:.1%} of the weights moved under mixed bf16"
    cosine = torch.nn.functional.cosine_similarity(d_mixed, d_fp32, dim=0).item()
    assert cosine >= 0.99, f"mixed-bf16 update vs fp32 update: cosine {cosine:.4f}"
    # the size of the update is the fp32 run's, not a rounding artefact (Adam: about lr per weight per step)
    assert 0.5 < d_mixed.abs().mean().item() / d_fp32.abs().mean().item() < 2.0
    # the stage record `cream run` keeps in its manifest says what ran
    assert record["dtype"] == "bf16" and record["precision"] == "mixed" and record["master_dtype"] == "fp32"
    assert record["save_dtype"] == "fp32"
    assert "fp32 master weights, bf16 autocast (mixed)" in runs["log"]


def test_pure_bf16_is_shown_losing_the_updates(runs):
    import torch

    folder, record = runs["pure"]
    saved = _weights(folder)
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert record == {"dtype": "bf16", "precision": "pure", "master_dtype": "bf16", "save_dtype": "bf16"}
    d_pure = _delta(runs["start"], saved)
    d_mixed = _delta(runs["start"], _weights(runs["mixed"][0]))
    moved_pure, moved_mixed = (d_pure != 0).double().mean().item(), (d_mixed != 0).double().mean().item()
    assert moved_pure < 0.5 * moved_mixed, (moved_pure, moved_mixed)
    d_fp32 = _delta(runs["start"], _weights(runs["fp32"][0]))
    cosine = torch.nn.functional.cosine_similarity(d_pure, d_fp32, dim=0).item()
    assert cosine < 0.9, f"pure bf16 kept the fp32 update's direction (cosine {cosine:.3f})?"


def test_pure_bf16_at_a_small_lr_warns_in_one_line(tiny_model, prefs, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="cream.train"):
        _train(tiny_model, prefs, tmp_path / "p", dtype="bf16", precision="pure")
    lines = [r.getMessage() for r in caplog.records if "precision pure" in r.getMessage()]
    assert len(lines) == 1 and "round away" in lines[0] and "\n" not in lines[0]


def test_save_dtype_bf16_casts_the_checkpoint_and_says_so(tiny_model, prefs, tmp_path, caplog):
    import logging

    import torch

    with caplog.at_level(logging.INFO, logger="cream.train"):
        res = _train(tiny_model, prefs, tmp_path / "c", dtype="bf16", save_dtype="bf16")
    saved = _weights(tmp_path / "c")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "c" / "config.json").read_text())["dtype"] == "bfloat16"
    assert res.precision["master_dtype"] == "fp32" and res.precision["save_dtype"] == "bf16"
    assert any("saved the weights in bf16" in r.getMessage() for r in caplog.records)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "c").dtype == torch.bfloat16  # a loadable checkpoint


def test_cast_checkpoint_is_exact_and_idempotent(tiny_model, tmp_path):
    import shutil

    import torch

    from cream_train.precision import cast_checkpoint

    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    start = _weights(folder)
    assert cast_checkpoint(folder, "fp32") == 0  # already fp32: nothing rewritten
    n = cast_checkpoint(folder, "bf16")
    assert n == len(start)
    after = _weights(folder)
    assert all(torch.equal(after[k], start[k].to(torch.bfloat16)) for k in start)
    assert cast_checkpoint(folder, "bf16") == 0


def test_bad_dtype_and_precision_are_one_line(tiny_model, prefs, tmp_path, cream_exe):
    res = cream_exe("train", prefs, "--model", tiny_model, "--out", tmp_path / "o", "--dtype", "fp17")
    assert_user_error(res, "--dtype", "fp17", "auto, bf16, fp16, fp32")
    res = cream_exe("train", prefs, "--model", tiny_model, "--out", tmp_path / "o", "--dtype", "fp16",
                    "--precision", "pure")
    assert_user_error(res, "--precision", "pure", "--dtype fp16")
    res = cream_exe("sample", prefs, "--model", tiny_model, "--out", tmp_path / "s", "--dtype", "half")
    assert_user_error(res, "--dtype", "half")
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_dtype_reaches_each_inference_engine(tiny_model):
    """The hf engines (sampler, scorer through models.load, reward model) load in the stage's dtype; auto is fp32 on
    this CPU."""
    import torch

    from cream_data.engines import models, rm_score
    from cream_data.engines.hf_sample import HfSampler

    ref = models.resolve(str(tiny_model))
    assert HfSampler.load(ref, dtype="bf16").model.dtype == torch.bfloat16
    assert HfSampler.load(ref).dtype == "fp32"
    assert models.load(ref, dtype="fp16")[0].dtype == torch.float16
    assert models.resolve_dtype("auto", "cpu") == "fp32" and models.resolve_dtype("bf16", "cpu") == "bf16"
    assert models.short_name(torch.bfloat16) == "bf16" and models.short_name("float32") == "fp32"
    with pytest.raises(Exception):
        rm_score.load(ref, dtype="bf16")  # a causal LM is no reward model: refused whatever the dtype


def test_cream_run_with_train_dtype_bf16_records_it(tmp_path, tiny_model, cream_exe):
    """`cream run` end to end on CPU with `train.dtype: bf16` (and label/sample in bf16): every stage record in
    the manifest says the dtype it ran in; training kept fp32 master weights."""
    cfg = write_tiny_run_config(tmp_path, name="bf16", run_dir=tmp_path / "run", model=tiny_model, iterations=1,
                                sft={"limit": 8}, sample={"max_new_tokens": 8, "dtype": "bf16"},
                                label={"dtype": "bf16"}, train={"dtype": "bf16"}, eval={"models": "none"})
    res = cream_exe("run", cfg, timeout=900)
    assert res.code == 0, res
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert stages["sample-1"]["dtype"] == "bf16"
    assert stages["label-1"]["dtype"] == "bf16"
    assert stages["train-M2"]["dtype"] == "bf16" and stages["train-M2"]["master_dtype"] == "fp32"
    assert stages["train-M1"]["dtype"] == "fp32"  # sft keeps auto: fp32 on this CPU
    from cream_data.tables import io

    prefs = io.read_manifest(tmp_path / "run" / "iter-1" / "preferences")
    assert prefs["inputs"]["dtype"] == "bf16"  # the stored log-probs' numerics travel with the table


def test_bf16_labeling_scores_with_the_trainers_numerics(tiny_model):
    """`cream label --dtype bf16` scores with fp32 embeddings and norms and bf16 matmuls under autocast: bit for bit
    what fp32 weights under bf16 autocast (a mixed-precision trainer) compute, with bf16 Linear weights in memory;
    plain bf16 weights (the residual stream rounded too) give other values. bench/bf16_reference.py measures the
    bias that removes."""
    import numpy as np
    import torch

    from cream_data.engines import models
    from cream_data.engines.hf_score import HFScorer, tokenize
    from tests.support.training import PAIRS

    ref = models.resolve(str(tiny_model))
    tok = models.load_tokenizer(ref)
    prompts = [[{"role": "user", "content": q}] for q, _, _ in PAIRS] * 2
    responses = [c for _, c, _ in PAIRS] + [r for _, _, r in PAIRS]
    items = tokenize(tok, prompts, responses)

    def scores(model, compute):
        return HFScorer(model, tok.pad_token_id, batch_size=4, compute=compute).score(items)

    mixed = models.load(ref, dtype="bf16", mixed=True)[0]
    linear = [m.weight.dtype for m in mixed.modules() if isinstance(m, torch.nn.Linear)
              and m.weight is not mixed.get_input_embeddings().weight]
    assert linear and set(linear) == {torch.bfloat16}
    assert mixed.get_input_embeddings().weight.dtype == torch.float32
    fp32 = models.load(ref, dtype="fp32")[0]
    stored = scores(mixed, "bf16")
    trainer_like = scores(fp32, "bf16")  # fp32 weights under bf16 autocast
    assert np.array_equal(stored, trainer_like)
    assert not np.array_equal(stored, scores(fp32, "fp32"))  # autocast did run in bf16
    plain = scores(models.load(ref, dtype="bf16")[0], "fp32")  # bf16 weights, no autocast
    assert not np.array_equal(stored, plain)
