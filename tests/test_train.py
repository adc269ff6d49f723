"""`cream train`: DPO with the CREAM loss on TRL (stored vs computed reference), SFT, output and lineage, bad input.

Preference tables are built here with pyarrow to the preferences schema; their stored log-probs come from an
independent naive computation (full forward, full log-softmax over the vocabulary) over the tiny model.
"""

from __future__ import annotations

import os

import json
import logging
import math

import pyarrow as pa
import pytest

import schemas
from cream_data.tables import io
from tests.support.cli import assert_user_error
from tests.support.training import PAIRS, WEIGHTS, make_preferences, make_sft


@pytest.fixture(scope="module")
def prefs_path(tiny_model, tmp_path_factory):
    return make_preferences(tmp_path_factory.mktemp("prefs") / "preferences", tiny_model)


def dpo_cfg(tiny_model, prefs_path, out, **kw):
    from cream_train.config import DPOTrainConfig

    base = dict(data=str(prefs_path), model=str(tiny_model), out=str(out), batch_size=4, max_steps=2,
                warmup_ratio=0.0, lr=1e-3)
    base.update(kw)
    return DPOTrainConfig(**base)


def first_batch(trainer, n=4):
    rows = [trainer.train_dataset[i] for i in range(n)]
    return trainer.data_collator(rows)


# ------------------------------------------------------------------------------------------- tokenisation
def test_trainer_response_tokens_are_the_scored_span(tiny_model, prefs_path, tmp_path):
    """TRL's tokenisation of prompt/chosen gives exactly docs/algorithm.md's response tokens (y + <|im_end|> + \\n)."""
    from cream_train.prefs import response_token_ids
    from cream_train.train import build_dpo_trainer, prepare_dpo

    cfg = dpo_cfg(tiny_model, prefs_path, tmp_path / "o")
    data = prepare_dpo(cfg)
    trainer = build_dpo_trainer(cfg, data, tmp_path / "run")
    tok = data.tokenizer
    for i, row in enumerate(data.table.to_pylist()):
        ex = trainer.train_dataset[i]
        p_ids, c_ids = response_token_ids(tok, row["prompt"], row["chosen"])
        assert ex["prompt_ids"] == p_ids and ex["chosen_ids"] == c_ids
        assert len(ex["chosen_ids"]) == row["chosen_n_tokens"]
        assert len(ex["rejected_ids"]) == row["rejected_n_tokens"]
    assert tok.decode(trainer.train_dataset[0]["chosen_ids"]) == PAIRS[0][1] + "<|im_end|>\n"


# ------------------------------------------------------------------------------------------- reference
def test_stored_reference_applies_to_a_linked_or_copied_checkpoint(tiny_model, tiny_model_b, prefs_path, tmp_path):
    """Tables name models by path; a run that took M_t by `--reuse-from` (hard links) or a copy of the folder has the
    same weights under another path: the stored reference log-probs still apply. Other weights do not."""
    import shutil

    from cream_data.engines.models import same_weights
    from cream_train.train import prepare_dpo

    linked, copied, changed = tmp_path / "linked", tmp_path / "copied", tmp_path / "changed"
    shutil.copytree(tiny_model, linked, copy_function=os.link)
    shutil.copytree(tiny_model, copied)
    shutil.copytree(tiny_model, changed)
    w = changed / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    w.write_bytes(bytes(data))
    assert same_weights(str(tiny_model), str(linked)) and same_weights(str(tiny_model), str(copied))
    assert not same_weights(str(tiny_model), str(changed)) and not same_weights(str(tiny_model), str(tiny_model_b))
    assert prepare_dpo(dpo_cfg(linked, prefs_path, tmp_path / "o1")).stored
    assert prepare_dpo(dpo_cfg(copied, prefs_path, tmp_path / "o2")).stored
    assert not prepare_dpo(dpo_cfg(changed, prefs_path, tmp_path / "o3")).stored


def test_stored_reference_loads_and_runs_no_reference_model(tiny_model, prefs_path, tmp_path):
    from cream_train.train import build_dpo_trainer, prepare_dpo

    cfg = dpo_cfg(tiny_model, prefs_path, tmp_path / "o")
    data = prepare_dpo(cfg)
    assert data.stored
    trainer = build_dpo_trainer(cfg, data, tmp_path / "run")
    assert trainer.ref_model is None
    assert {"weight", "ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)
    forwards = []
    trainer.model.register_forward_pre_hook(lambda *a: forwards.append(1))
    trainer.train()
    assert trainer.reference_forwards == 0
    assert len(forwards) == cfg.max_steps  # one policy forward per step over [chosen; rejected], nothing else


def test_stored_logps_equal_the_policy_logps_at_step_zero(tiny_model, prefs_path, tmp_path):
    """Stored log pi_{M_t} (naive full forward) == the trainer's own log-probs of M_t on the same batch."""
    import torch

    from cream_train.train import build_dpo_trainer, prepare_dpo

    cfg = dpo_cfg(tiny_model, prefs_path, tmp_path / "o")
    trainer = build_dpo_trainer(cfg, prepare_dpo(cfg), tmp_path / "run")
    batch = first_batch(trainer, 8)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        lp = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                           fused_lm_head=True).log_probs.sum(1).double()
    stored = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).double()
    assert torch.allclose(lp, stored, atol=2e-4, rtol=0), (lp - stored).abs().max()


def test_stored_and_computed_reference_give_the_same_losses(tiny_model, prefs_path, tmp_path, caplog, built_trainers):
    """Same data, same seed: per-step losses with stored reference log-probs == with TRL's reference model."""
    from cream_train.train import train_dpo

    runs = {}
    for reference in ("stored", "computed"):
        cfg = dpo_cfg(tiny_model, prefs_path, tmp_path / reference, reference=reference, max_steps=3)
        res = train_dpo(cfg)
        assert res.reference == reference
        trainer = built_trainers[-1]
        assert (trainer.ref_model is None) == (reference == "stored")
        runs[reference] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(runs["stored"]) == 3
    assert runs["stored"][0] == pytest.approx(math.log(2), abs=1e-5)  # h = 0 at step 0 only if the spans match
    for a, b in zip(runs["stored"], runs["computed"]):
        assert a == pytest.approx(b, abs=1e-5)
    assert runs["stored"][2] != pytest.approx(math.log(2), abs=1e-4)  # later steps are not trivially log 2


def test_template_hash_mismatch_warns_and_computes_reference(tiny_model, tmp_path, caplog):
    from cream_train.train import build_dpo_trainer, prepare_dpo

    path = make_preferences(tmp_path / "p", tiny_model, template_hash="0000000000000000", logps=True)
    cfg = dpo_cfg(tiny_model, path, tmp_path / "o")
    with caplog.at_level(logging.WARNING, logger="cream.train"):
        data = prepare_dpo(cfg)
    assert not data.stored
    msgs = [r.getMessage() for r in caplog.records if r.name == "cream.train"]
    assert len(msgs) == 1 and "template_hash" in msgs[0] and "\n" not in msgs[0]
    trainer = build_dpo_trainer(cfg, data, tmp_path / "run")
    assert trainer.ref_model is not None and "ref_chosen_logps" not in trainer.train_dataset.column_names
    trainer.train()
    assert trainer.reference_forwards == cfg.max_steps


def test_other_model_in_table_computes_reference(tiny_model, tiny_model_b, tmp_path, caplog):
    from cream_train.train import prepare_dpo

    path = make_preferences(tmp_path / "p", tiny_model_b)  # stored log-probs of another model
    with caplog.at_level(logging.WARNING, logger="cream.train"):
        assert not prepare_dpo(dpo_cfg(tiny_model, path, tmp_path / "o")).stored
    assert "not the starting model" in caplog.text


# ------------------------------------------------------------------------------------------- training
def test_training_changes_parameters_lowers_loss_and_writes_a_checkpoint(tiny_model, prefs_path, tmp_path,
                                                                          built_trainers):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cream_data.engines.models import chat_template_hash
    from cream_train.train import train_dpo

    out = tmp_path / "m1"
    train_dpo(dpo_cfg(tiny_model, prefs_path, out, max_steps=8, batch_size=8, lr=5e-3))
    (trainer,) = built_trainers
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[-1] < losses[0] - 0.05, losses
    acc = [e["rewards/accuracies"] for e in trainer.state.log_history if "rewards/accuracies" in e]
    assert acc[-1] > 0.5
    mean_c = [e["consistency/mean_C"] for e in trainer.state.log_history if "consistency/mean_C" in e]
    assert mean_c[0] == pytest.approx(sum(WEIGHTS) / len(WEIGHTS))

    assert out.is_dir() and not list(tmp_path.glob(".m1.tmp-*"))
    before = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    after = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    diff = sum((a - b).abs().sum().item() for a, b in zip(before.parameters(), after.parameters()))
    assert diff > 0
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template
    assert chat_template_hash(tok) == chat_template_hash(AutoTokenizer.from_pretrained(tiny_model))
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    gen = after.generate(**ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]

    lineage = json.loads((out / "cream_lineage.json").read_text())
    assert lineage["parent_model"] == str(tiny_model.resolve())
    assert lineage["method"] == "cream" and lineage["reference"] == "stored"
    assert lineage["data"]["fingerprint"].startswith("sha256:")
    assert lineage["config"]["beta"] == 0.1 and lineage["metrics"]["global_step"] == 8
    assert {"torch", "transformers", "trl", "peft", "accelerate"} <= set(lineage["versions"])
    assert json.loads((out / "cream_train_config.json").read_text())["method"] == "cream"


def test_lora_training_saves_a_merged_plain_checkpoint(tiny_model, prefs_path, tmp_path, built_trainers):
    import torch
    from transformers import AutoModelForCausalLM

    from cream_train.train import train_dpo

    out = tmp_path / "lora"
    train_dpo(dpo_cfg(tiny_model, prefs_path, out, lora=True, lora_r=4, max_steps=2, lr=1e-2))
    (trainer,) = built_trainers
    assert trainer.ref_model is None and trainer.reference_forwards == 0
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    before = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    after = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))


# ------------------------------------------------------------------------------------------- SFT
def test_sft_masks_prompt_tokens_and_trains(tiny_model, tmp_path, built_trainers):
    from cream_train.config import SFTTrainConfig
    from cream_train.prefs import response_token_ids
    from cream_train.train import train_sft

    data = make_sft(tmp_path / "sft")
    out = tmp_path / "m1"
    train_sft(SFTTrainConfig(data=str(data), model=str(tiny_model), out=str(out), max_steps=3, lr=5e-3,
                             batch_size=2, warmup_ratio=0.0))
    (trainer,) = built_trainers
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    tok = trainer.processing_class
    for b in range(2):
        row = trainer.train_dataset[b]
        prompt = [{"role": "user", "content": PAIRS[b][0]}]
        p_ids, c_ids = response_token_ids(tok, prompt, [{"role": "assistant", "content": PAIRS[b][1]}])
        labels = batch["labels"][b].tolist()
        assert labels[: len(p_ids)] == [-100] * len(p_ids)  # no loss on the prompt
        assert labels[len(p_ids): len(p_ids) + len(c_ids)] == c_ids  # loss on the answer + end-of-turn
        assert len(row["input_ids"]) == len(p_ids) + len(c_ids)
    lineage = json.loads((out / "cream_lineage.json").read_text())
    assert lineage["stage"] == "sft" and lineage["metrics"]["global_step"] == 3
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists()


# ------------------------------------------------------------------------------------------- CLI + bad input
def test_cli_trains_dpo(cli, tiny_model, prefs_path, tmp_path):
    out = tmp_path / "cli-out"
    r = cli("train", prefs_path, "--model", tiny_model, "--out", out, "--method", "cream-avg", "--max-steps", "1",
            "--batch-size", "4")
    assert r.code == 0, r
    assert json.loads((out / "cream_lineage.json").read_text())["method"] == "cream-avg"
    assert str(out) in r.out


def test_cli_refuses_existing_output_unless_overwrite(cli, tiny_model, prefs_path, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")  # the user's folder: never replaced, --overwrite or not
    for extra in ([], ["--overwrite"]):
        assert_user_error(cli("train", prefs_path, "--model", tiny_model, "--out", out, "--max-steps", "1", *extra),
                          "not a `cream train` checkpoint")
    assert (out / "keep.txt").exists()
    ckpt = tmp_path / "ckpt"
    assert cli("train", prefs_path, "--model", tiny_model, "--out", ckpt, "--max-steps", "1").code == 0
    assert_user_error(cli("train", prefs_path, "--model", tiny_model, "--out", ckpt), "earlier", "--overwrite")
    first = (ckpt / "cream_lineage.json").read_text()
    r = cli("train", prefs_path, "--model", tiny_model, "--out", ckpt, "--overwrite", "--max-steps", "1")
    assert r.code == 0, r
    assert (ckpt / "cream_lineage.json").read_text() != first


def test_cli_refuses_table_without_weight_for_cream(cli, tiny_model, tmp_path):
    path = make_preferences(tmp_path / "p.parquet", tiny_model, logps=False, drop=("weight",))
    assert_user_error(cli("train", path, "--model", tiny_model, "--out", tmp_path / "o"), "weight", "--method dpo")
    assert not (tmp_path / "o").exists()


def test_cli_refuses_weights_outside_unit_interval(cli, tiny_model, tmp_path):
    import pyarrow.parquet as pq

    path = make_preferences(tmp_path / "p.parquet", tiny_model, logps=False)
    t = pq.read_table(path)
    w = t.column("weight").to_pylist()
    w[3] = 1.5
    t = t.set_column(t.column_names.index("weight"), "weight", pa.array(w, pa.float64()))
    pq.write_table(t, path)
    assert_user_error(cli("train", path, "--model", tiny_model, "--out", tmp_path / "o"), "weight", "row 3", "[0, 1]")


def test_cli_refuses_empty_table(cli, tiny_model, tmp_path):
    path = tmp_path / "empty.parquet"
    io.write_table(schemas.get("preferences").arrow.empty_table(), path, "preferences")
    assert_user_error(cli("train", path, "--model", tiny_model, "--out", tmp_path / "o"), "empty")


def test_cli_warns_on_template_mismatch_in_one_line(cli, tiny_model, tmp_path):
    path = make_preferences(tmp_path / "p", tiny_model, template_hash="ffffffffffffffff")
    r = cli("train", path, "--model", tiny_model, "--out", tmp_path / "o", "--max-steps", "1",
            "--warmup-ratio", "0")
    assert r.code == 0, r
    warn = [ln for ln in r.err.splitlines() if "warning" in ln.lower()]
    assert len(warn) == 1 and "template_hash" in warn[0]
    assert json.loads((tmp_path / "o" / "cream_lineage.json").read_text())["reference"] == "computed"


def test_cli_refuses_stored_reference_when_it_does_not_apply(cli, tiny_model, tmp_path):
    path = make_preferences(tmp_path / "p", tiny_model, logps=False)
    assert_user_error(cli("train", path, "--model", tiny_model, "--out", tmp_path / "o", "--reference", "stored"),
                      "chosen_logp")


def test_config_reports_every_problem_at_once(tmp_path):
    from cream_data.errors import CreamError
    from cream_train.config import DPOTrainConfig

    with pytest.raises(CreamError) as e:
        DPOTrainConfig(data="d", model="m", out="o", beta=0, method="ipo", lr=-1)
    msg = str(e.value)
    assert "beta: got 0" in msg and "method: got 'ipo'" in msg and "lr: got -1" in msg and "\n" not in msg


@pytest.mark.parametrize("batch_size,epochs,warns", [(64, 1.0, True), (1, 2.0, False)])
def test_a_run_eaten_by_warmup_is_flagged(tiny_model, prefs_path, tmp_path, caplog, batch_size, epochs, warns,
                                          built_trainers):
    """HF warms up for ceil(ratio x steps) steps from lr 0: a one-step run would not learn; say so up front."""
    from cream_train.train import train_dpo

    caplog.set_level("WARNING", logger="cream.train")
    train_dpo(dpo_cfg(tiny_model, prefs_path, tmp_path / "o", batch_size=batch_size, epochs=epochs,
                      max_steps=None, warmup_ratio=0.1))
    flagged = any("barely change the model" in r.getMessage() for r in caplog.records)
    assert flagged == warns
    from cream_train.train import optimizer_steps

    (trainer,) = built_trainers
    n = len(trainer.train_dataset)
    assert trainer.state.global_step == optimizer_steps(n, batch_size, 1, 1, epochs, None)
