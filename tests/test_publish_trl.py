"""A published dataset in plain TRL: TRL's reference columns beside ours, what stock TRL does with them, and the
card's code block (a small stock DPOTrainer subclass) run as printed: CREAM's C-weighted loss on the stored reference,
no reference forward. The stock `trl dpo` path itself is tests/test_publish.py's
``test_stock_trl_dpo_trainer_runs_a_step_on_the_published_config``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cream_data.publish import hub, trl_usage
from cream_data.publish.trl_usage import TRL_REFERENCE
from cream_data.tables.io import read_table, write_table
from tests.support.published import make_run, make_tables

REPO_ID = "me/cream-tiny"


class CardRun:
    """The card's TRL code block, run as printed (:func:`published_tiny`): its namespace and what the spies saw."""

    def __init__(self, folder: Path, model: Path, table: pa.Table, code: str):
        self.folder, self.model, self.table, self.code = folder, model, table, code
        self.namespace: dict = {}
        self.reference_passes = 0   # stock DPOTrainer._precompute_ref_logps run over a dataset
        self.reference_batches = 0  # stock DPOTrainer.compute_ref_log_probs: one reference forward each
        self.forwards_in_train = 0  # forwards of the trained model during trainer.train()


def card_code(folder: Path) -> str:
    """The one Python block of the card's "Training with TRL" section."""
    section = (folder / "README.md").read_text().split("## Training with TRL", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, blocks
    return blocks[0]


@pytest.fixture(scope="module")
def published_tiny(tiny_model, tmp_path_factory):
    """A labeled folder whose stored log-probs are the tiny model's own (an independent full forward over it:
    tests/support/training.py), published; then the card's code block is executed as-is. The test only serves the
    Hub id from the folder (``load_dataset``), gives DPOConfig CPU, one step and a large learning rate (so that the
    policy moves off the reference), and counts reference work with spies on the stock DPOTrainer."""
    import datasets
    import trl

    from tests.support.training import make_preferences

    root = tmp_path_factory.mktemp("tiny-pub")
    make_preferences(root / "lab" / "preferences", tiny_model)
    folder = hub.build(root / "lab", root / "repo", REPO_ID)
    run = CardRun(folder, tiny_model, read_table(root / "lab" / "preferences", "preferences"), card_code(folder))
    real_load, real_config, stock = datasets.load_dataset, trl.DPOConfig, trl.DPOTrainer
    real_precompute, real_reference, real_train = stock._precompute_ref_logps, stock.compute_ref_log_probs, stock.train

    def load(repo_id, *args, **kwargs):
        assert repo_id == REPO_ID
        return real_load(str(folder), *args, **kwargs)

    def config(**kwargs):
        return real_config(**{**kwargs, "output_dir": str(root / "trl"), "use_cpu": True, "bf16": False,
                              "max_steps": 1, "learning_rate": 1e-2, "report_to": "none", "save_strategy": "no",
                              "logging_steps": 1})

    def precompute(self, *args, **kwargs):
        run.reference_passes += 1
        return real_precompute(self, *args, **kwargs)

    def reference(self, *args, **kwargs):
        run.reference_batches += 1
        return real_reference(self, *args, **kwargs)

    def train(self, *args, **kwargs):
        def count(*_):
            run.forwards_in_train += 1

        hook = self.model.register_forward_pre_hook(count)
        try:
            return real_train(self, *args, **kwargs)
        finally:
            hook.remove()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets, "load_dataset", load)
        mp.setattr(trl, "DPOConfig", config)
        for name, spy in (("_precompute_ref_logps", precompute), ("compute_ref_log_probs", reference),
                          ("train", train)):
            mp.setattr(stock, name, spy)
        exec(compile(run.code, str(folder / "README.md"), "exec"), run.namespace)
    return run


def test_published_preferences_carry_trl_reference_columns_and_read_back_unchanged(published_tiny, cli):
    from datasets import load_dataset

    ds = load_dataset(str(published_tiny.folder), "preferences", split="train")
    want = published_tiny.table
    for ours, theirs in TRL_REFERENCE.items():
        assert ds.features[theirs].dtype == "float64"
        assert ds[theirs] == want.column(ours).to_pylist() == ds[ours]
        assert None not in ds[theirs]
    # cream reads back the table it published (what `cream train` trains on and fingerprints)
    back = hub.load_preferences(str(published_tiny.folder))
    assert back.column_names == want.column_names and back.to_pylist() == want.to_pylist()
    r = cli("sql", published_tiny.folder, "SELECT count(*) AS n, max(abs(ref_chosen_logps - chosen_logp)) AS dc, "
            "max(abs(ref_rejected_logps - rejected_logp)) AS dr FROM preferences")
    assert r.code == 0, r
    assert re.search(r"\b8\b.*\b0\.0\b.*\b0\.0\b", r.out), r.out


def test_card_code_trains_with_c_on_the_stored_reference_without_a_reference_forward(published_tiny, tmp_path):
    import torch
    import trl

    from cream_train.loss import cream_loss
    from tests.support.training import _stored_logps

    run = published_tiny
    imported = re.findall(r"^(?:from|import) (\S+)", run.code, re.M)
    assert sorted(set(imported)) == ["datasets", "torch", "torch.nn.functional", "trl"]  # stock libraries only
    trainer = run.namespace["trainer"]
    assert type(trainer).__bases__ == (trl.DPOTrainer,) and trainer.state.global_step == 1
    # no reference model, no reference pass over the dataset, no reference batch; one policy forward for the step
    assert trainer.ref_model is None
    assert (run.reference_passes, run.reference_batches, run.forwards_in_train) == (0, 0, 1)
    # at step 0 the policy is the labeler, so h = 0 for every pair (the stored values are its log-probs): log 2
    assert [e["loss"] for e in trainer.state.log_history if "loss" in e] == [pytest.approx(np.log(2), abs=1e-4)]

    # after the step, on the whole batch: the card's loss == cream_loss on an independent computation
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    t = run.table
    assert batch["weight"].tolist() == pytest.approx(t.column("weight").to_pylist())
    with torch.no_grad():
        card_loss = trainer.compute_loss(trainer.model, dict(batch)).item()
    trainer.save_model(str(tmp_path / "m1"))
    prompts = t.column("prompt").to_pylist()
    policy = {side: torch.tensor(_stored_logps(tmp_path / "m1", prompts, t.column(side).to_pylist())[0])
              for side in ("chosen", "rejected")}
    stored = {side: torch.tensor(t.column(f"{side}_logp").to_pylist(), dtype=torch.float64)
              for side in ("chosen", "rejected")}
    c = torch.tensor(t.column("weight").to_pylist(), dtype=torch.float64)

    def loss(weight) -> float:
        return cream_loss(policy["chosen"], policy["rejected"], stored["chosen"], stored["rejected"], weight,
                          trainer.beta).losses.mean().item()

    assert card_loss == pytest.approx(loss(c), abs=1e-4)
    assert (c < 1).any() and abs(loss(c) - loss(1.0)) > 1e-3  # unweighted DPO is another loss on this batch
    assert abs(card_loss - loss(1.0)) > 1e-3


def test_stock_trl_precompute_runs_its_own_reference_pass_then_refuses_our_columns(published_tiny, tmp_path,
                                                                                  monkeypatch):
    """The card's claim for `precompute_ref_log_probs=True`: TRL does not reuse the stored columns."""
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    # a fresh cache: TRL reuses reference log-probs it cached beside the dataset's files by an earlier run
    ds = load_dataset(str(published_tiny.folder), "preferences", split="train", cache_dir=str(tmp_path / "cache"))
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, report_to="none", use_cpu=True, bf16=False,
                     save_strategy="no", precompute_ref_log_probs=True)
    passes = []
    real = DPOTrainer.compute_ref_log_probs
    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", lambda self, *a: passes.append(1) or real(self, *a))
    with pytest.raises(ValueError, match="duplicated columns"):
        DPOTrainer(model=str(published_tiny.model), args=args, train_dataset=ds)
    assert passes  # the reference forward ran before the refusal


def test_card_says_what_plain_trl_does_with_the_columns(published_tiny, tmp_path):
    import trl

    text = (published_tiny.folder / "README.md").read_text()
    section = text.split("## Training with TRL", 1)[1].split("\n## ", 1)[0]
    for sentence in ("`trl dpo` and `trl.DPOTrainer` load it as-is",
                     "C is lost: this trains plain (unweighted) DPO.",
                     "every pair has weight 1 and CREAM's reversed term is gone",
                     "The stored reference is ignored: it is recomputed.",
                     "TRL loads a reference model and runs it on every batch",
                     "log π_{M_t}(y|x) summed over the response tokens",
                     "valid as the DPO reference only for training from that same model, with the same tokenizer "
                     "and chat template, and no truncation",
                     f"tested with TRL {trl_usage.TRL_TESTED}"):
        assert sentence in section, sentence
    assert trl.__version__ == trl_usage.TRL_TESTED  # the version the card names is the one its code ran with here
    assert f'MODEL = "{published_tiny.model}"' in section  # the labeler, from the `model` column
    assert "trains as-is" not in text
    assert "- `ref_chosen_logps` (float64): `chosen_logp` under the name TRL's DPOTrainer reads" in text

    # no stored log-probs: no TRL columns (a null would fail TRL's collator), and the card says the reference is
    # computed
    prefs = make_tables(1, 3, seed=5)["preferences"]
    for c in TRL_REFERENCE:
        prefs = prefs.set_column(prefs.column_names.index(c), c, pa.nulls(prefs.num_rows, pa.float64()))
    write_table(prefs, tmp_path / "lab" / "preferences", "preferences")
    out = hub.build(tmp_path / "lab", tmp_path / "repo", "me/x")
    assert pq.read_schema(out / "data/preferences/train-00000-of-00001.parquet").names == prefs.column_names
    bare = (out / "README.md").read_text()
    assert "The reference is computed." in bare and "C is lost" in bare and "(float64): `chosen_logp`" not in bare


def test_statistics_and_read_back_do_not_change_with_the_trl_columns(tmp_path, monkeypatch):
    make_run(tmp_path / "run")
    with_trl = hub.build(tmp_path / "run", tmp_path / "a", "me/x")
    monkeypatch.setattr(trl_usage, "add_trl_reference", lambda splits: False)
    without = hub.build(tmp_path / "run", tmp_path / "b", "me/x")

    def statistics(folder: Path) -> str:
        return (folder / "README.md").read_text().split("## Statistics", 1)[1].split("## Licence", 1)[0]

    assert "| iter_2 | 5 |" in statistics(with_trl) and statistics(with_trl) == statistics(without)
    assert "ref_chosen_logps" in pq.read_schema(with_trl / "data/preferences/iter_1-00000-of-00001.parquet").names
    assert hub.load_preferences(str(with_trl)).equals(hub.load_preferences(str(without)))
