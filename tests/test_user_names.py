"""Numbers and names as users write them (issue #25): floats such as ``1e-6`` in YAML, every flag in its underscore
form, TRL's names of the common settings as aliases (flags and run config keys), the closest valid name suggested
for an unknown one, and ``--config FILE.yaml`` for a single stage command.

Accepted forms run in-process (``cli``); the error paths through the installed console script (what users run).
"""

from __future__ import annotations

import re

import pytest
import yaml

from cli.options import Options
from cream_data.errors import CreamError
from cream_data.settings import ALIASES, SAME_AS_TRL, coerce
from tests.support import REPO
from tests.support.cli import assert_user_error
from tests.support.runs import tiny_run_config, write_yaml


@pytest.fixture
def built(monkeypatch):
    """Stop a stage command right after it built its config: the configs it built, in order."""
    configs = []
    original = Options.build

    def build(self, cls, **kw):
        configs.append(original(self, cls, **kw))
        raise CreamError("stopped after building the config (test)")

    monkeypatch.setattr(Options, "build", build)
    return configs


def config_of(cli, built, *args):
    r = cli(*args)
    assert r.code == 2 and "stopped after building the config" in r.err, r
    return built[-1]


def checked(cli, tmp_path, cfg: dict, text: str | None = None) -> dict:
    """`cream run CFG --check` in-process: the settings it prints as they will run."""
    r = cli("run", write_yaml(tmp_path / "cfg.yaml", cfg if text is None else {}, text=text or ""), "--check")
    assert r.code == 0, r
    *settings, last = r.out.rstrip().splitlines()
    assert ": valid" in last, r
    return yaml.safe_load("\n".join(settings))


def small_config(tmp_path) -> dict:
    return tiny_run_config(run_dir=tmp_path / "run")  # the embedded model (the alias): --check loads no model


# ---------------------------------------------------------------------------- floats as users write them
@pytest.mark.parametrize("text, value", [("1e-6", 1e-6), ("5E-7", 5e-7), ("+1e-3", 1e-3), (".5", 0.5),
                                         ("2.", 2.0), ("-3", -3.0), (" 1e-6 ", 1e-6)])
def test_a_float_written_as_a_string_is_a_float(text, value):
    assert coerce(text, float) == value and type(coerce(text, float)) is float
    assert coerce(text, float | None) == value


@pytest.mark.parametrize("text, hint", [("nan", float), ("inf", float), ("-inf", float), ("1e", float),
                                        ("1_000.0", float), ("abc", float), ("3", int), ("1e3", int), ("true", bool)])
def test_other_strings_stay_refused(text, hint):
    with pytest.raises(TypeError):
        coerce(text, hint)


def test_lr_1e_6_in_a_run_config(cli, tmp_path):
    cfg = small_config(tmp_path)
    cfg["train"]["lr"], cfg["sft"]["lr"] = "1e-6", "5E-7"
    text = yaml.safe_dump(cfg, sort_keys=False)
    assert "lr: 1e-6" in text and "lr: 5E-7" in text  # unquoted, as users write it; PyYAML reads it as a string
    assert yaml.safe_load(text)["train"]["lr"] == "1e-6"
    out = checked(cli, tmp_path, cfg, text=text)
    assert out["train"]["lr"] == 1e-6 and out["sft"]["lr"] == 5e-7


def test_a_string_for_an_int_setting_stays_refused(cream_exe, tmp_path):
    cfg = small_config(tmp_path)
    cfg["train"]["batch_size"], cfg["train"]["lr"] = "4", "nan"
    r = cream_exe("run", write_yaml(tmp_path / "cfg.yaml", cfg), "--check")
    assert_user_error(r, "train.batch_size: got '4' (str), expected int", "train.lr: got 'nan' (str), expected float")


# ---------------------------------------------------------------------------- TRL's names in a run config
def test_trl_names_in_a_run_config(cli, tmp_path):
    cfg = small_config(tmp_path)
    cfg["train"] = {"learning_rate": "1e-6", "num_train_epochs": 2, "per_device_train_batch_size": 2,
                    "gradient_accumulation_steps": 3, "max_length": 512}
    cfg["model_name_or_path"] = cfg.pop("model")
    out = checked(cli, tmp_path, cfg)
    assert {k: out["train"][k] for k in ("lr", "epochs", "batch_size", "grad_accum", "max_length")} == {
        "lr": 1e-6, "epochs": 2.0, "batch_size": 2, "grad_accum": 3, "max_length": 512}
    assert out["model"] == "smollm2-135m-instruct" and "learning_rate" not in out["train"]


def test_a_mistyped_key_suggests_the_closest(cream_exe, tmp_path):
    cfg = small_config(tmp_path)
    cfg["train"]["learnig_rate"] = 1e-6
    cfg["sample"]["max_new_token"] = 8
    r = cream_exe("run", write_yaml(tmp_path / "cfg.yaml", cfg), "--check")
    assert_user_error(r, "train.learnig_rate: unknown setting; did you mean learning_rate (lr)?",
                      "sample.max_new_token: unknown setting; did you mean max_new_tokens?")


def test_an_unknown_key_with_nothing_close_lists_the_known_ones(cream_exe, tmp_path):
    cfg = small_config(tmp_path)
    cfg["train"]["bogus"] = 1
    r = cream_exe("run", write_yaml(tmp_path / "cfg.yaml", cfg), "--check")
    assert_user_error(r, "train.bogus: unknown setting (known: ")


def test_an_alias_and_its_name_together_are_refused(cream_exe, tmp_path):
    cfg = small_config(tmp_path)
    cfg["train"]["learning_rate"] = 2e-6  # beside train.lr
    r = cream_exe("run", write_yaml(tmp_path / "cfg.yaml", cfg), "--check")
    assert_user_error(r, "train.lr and train.learning_rate: the same setting", "give one")


# ---------------------------------------------------------------------------- flags: underscores and TRL's names
def test_underscore_forms_and_trl_names_on_the_command_line(cli, built, tmp_path):
    cfg = config_of(cli, built, "train", "d", "--model_name_or_path", "m", "--output_dir", tmp_path / "o",
                    "--learning_rate", "1e-6", "--max_length", "512", "--num-train-epochs", "2",
                    "--per_device_train_batch_size", "3", "--gradient_accumulation_steps", "5", "--lora_r", "8",
                    "--no_gradient_checkpointing", "--weight_decay=0.01")
    assert (cfg.lr, cfg.max_length, cfg.epochs, cfg.batch_size, cfg.grad_accum, cfg.lora_r) == (1e-6, 512, 2.0, 3, 5, 8)
    assert cfg.model == "m" and cfg.out == str(tmp_path / "o") and cfg.weight_decay == 0.01
    assert cfg.gradient_checkpointing is False


def test_max_new_tokens_underscore_on_sample(cli, built, tmp_path):
    cfg = config_of(cli, built, "sample", tmp_path / "p", "--model", "m", "--out", tmp_path / "o",
                    "--max_new_tokens", "17", "--top_p", "0.5")
    assert cfg.max_new_tokens == 17 and cfg.top_p == 0.5


def test_help_lists_cream_names_only(cli):
    r = cli("train", "--help")
    assert r.code == 0 and "--max-length" in r.out
    for hidden in ("--max_length", "--learning-rate", "--learning_rate", "--output-dir", "--num-train-epochs"):
        assert hidden not in r.out


@pytest.mark.parametrize("args, needles", [
    (["train", "d", "--model", "m", "--out", "o", "--learnin-rate", "1e-6"],
     ["no such option --learnin-rate; did you mean --learning-rate / --lr?", "`cream train --help`"]),
    (["sample", "p", "--model", "m", "--out", "o", "--max_new_token", "3"],
     ["no such option --max_new_token; did you mean --max-new-tokens?"]),
    (["train", "d", "--model", "m", "--out", "o", "--lr", "1e-6", "--learning-rate", "2e-6"],
     ["--lr and --learning-rate", "give one"]),
    (["train", "d", "--model", "m", "--out", "o", "--max-length", "5", "--max_length", "6"],
     ["--max-length and --max_length", "give one"]),
    (["eval", "--model", "m", "--out", "o", "--learning-rate", "1"], ["no such option --learning-rate"]),
])
def test_flag_errors_are_one_line(cream_exe, tmp_path, args, needles):
    r = cream_exe(*args, cwd=tmp_path)
    assert_user_error(r, *needles)
    assert r.err.startswith("error: ")


# ---------------------------------------------------------------------------- --config FILE.yaml
def test_train_config_file_with_a_flag_overriding_it(cli, built, tmp_path):
    (tmp_path / "conf").mkdir()
    f = tmp_path / "conf" / "train.yaml"
    f.write_text("learning_rate: 1e-6\nepochs: 2\nbeta: 0.2\nmax_length: 256\nlora: true\nmodel: ./M1\n"
                 "out: runs/M2\ndata: prefs.parquet\n")
    cfg = config_of(cli, built, "train", "--config", f, "--lr", "2e-6", "--max_length", "128")
    assert (cfg.lr, cfg.epochs, cfg.beta, cfg.max_length, cfg.lora) == (2e-6, 2.0, 0.2, 128, True)
    conf = (tmp_path / "conf").resolve()
    assert (cfg.model, cfg.out, cfg.data) == (str(conf / "M1"), str(conf / "runs" / "M2"),
                                              str(conf / "prefs.parquet"))


def test_sample_and_eval_config_files(cli, built, tmp_path):
    f = write_yaml(tmp_path / "s.yaml", {},
                   text="n: 3\nmax_new_tokens: 9\ntemperature: 5E-1\nmodel: smollm2-135m-instruct\n")
    cfg = config_of(cli, built, "sample", tmp_path / "p", "--out", tmp_path / "o", "--config", f, "--n", "4")
    assert (cfg.n, cfg.max_new_tokens, cfg.temperature, cfg.model) == (4, 9, 0.5, "smollm2-135m-instruct")
    (tmp_path / "data").mkdir()
    f = write_yaml(tmp_path / "e.yaml", {}, text="tasks: [arc_easy, gsm8k]\nlimit: 2\ndata_dir: data\n")
    cfg = config_of(cli, built, "eval", "--model", "m", "--out", tmp_path / "eo", "--config", f)
    assert cfg.tasks == ("arc_easy", "gsm8k") and cfg.limit == 2 and cfg.data_dir == str((tmp_path / "data").resolve())


def test_config_file_data_path_is_resolved_against_the_file(cream_exe, tmp_path):
    (tmp_path / "conf").mkdir()
    f = write_yaml(tmp_path / "conf" / "train.yaml", {}, text="data: missing-prefs.parquet\nmodel: m\nout: o\n")
    r = cream_exe("train", "--config", f, cwd=tmp_path)
    assert_user_error(r, str((tmp_path / "conf" / "missing-prefs.parquet").resolve()))


@pytest.mark.parametrize("text, needles", [
    ("learnig_rate: 1e-6\n", ["train.yaml: learnig_rate: unknown setting; did you mean learning_rate (lr)?"]),
    ("lr: 1e-6\nlearning_rate: 2e-6\n", ["train.yaml: lr and learning_rate: the same setting"]),
    ("batch_size: four\n", ["train.yaml: batch_size: got 'four' (str), expected int"]),
    ("lr: -1e-6\n", ["train.yaml: lr: got -1e-06, expected a finite number > 0"]),
    ("[1, 2]\n", ["train.yaml: got list, expected a mapping"]),
    ("lr: [\n", ["train.yaml: not valid YAML"]),
    ("lr: 1\nlr: 2\n", ["train.yaml", "duplicate key 'lr'"]),
])
def test_a_bad_config_file_is_one_line_naming_file_and_key(cream_exe, tmp_path, text, needles):
    f = write_yaml(tmp_path / "train.yaml", {}, text=text)
    r = cream_exe("train", "d", "--model", "m", "--out", tmp_path / "o", "--config", f, cwd=tmp_path)
    assert_user_error(r, *needles)


def test_a_missing_config_file(cream_exe, tmp_path):
    r = cream_exe("label", "r", "--out", "o", "--config", "nope.yaml", cwd=tmp_path)
    assert_user_error(r, "--config nope.yaml: no such file")


# ---------------------------------------------------------------------------- the docs' table
def test_the_docs_alias_table_is_the_derived_one():
    from cream_train.run.config import alias_table

    doc = (REPO / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Names and numbers as users write them"):]
    section = section[:section.index("\n## ")]
    table = "\n".join(ln for ln in section.splitlines() if ln.startswith("|"))
    assert table == alias_table()
    assert all(f"`{a}`" in table for a in [*ALIASES, *SAME_AS_TRL])


def test_every_alias_names_a_setting_and_no_flag():
    from cream_train.run.sections import STAGES
    from cream_data.settings import user_fields

    names = {f.name for cls in STAGES.values() for f in user_fields(cls)}
    assert set(ALIASES.values()) <= names and set(SAME_AS_TRL) <= names
    assert not set(ALIASES) & names  # an alias is never a setting's own name
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", a) for a in ALIASES)
