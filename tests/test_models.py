"""Model resolution: the embedded alias, local folders, Hub ids (one check, huggingface_hub's validator), the
embedded model's build lock, and one-line errors."""

from __future__ import annotations

import threading
import time

import pytest

from cream_data import hub_ids
from cream_data.engines import model_identity, model_loading, model_refs, models
from cream_data.errors import CreamError


def test_resolve_local_and_hub_and_bad_paths(tmp_path, tiny_model):
    ref = models.resolve(str(tiny_model))
    assert ref.kind == "local" and ref.path == str(tiny_model.resolve())
    assert models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    with pytest.raises(CreamError, match="path does not exist"):
        models.resolve(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CreamError, match="no config.json"):
        models.resolve(str(tmp_path / "empty"))
    with pytest.raises(CreamError, match="unknown model 'not a model!'"):
        models.resolve("not a model!")


@pytest.mark.parametrize("text,problem", [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", None), ("me/cream-prefs", None), ("a_b/c.d", None),
    ("me/bad--name", "Cannot have -- or .."), ("org/na..me", "Cannot have -- or .."),
    ("org/name-", "cannot start or end with '-' or '.'"), ("-org/name", "cannot start or end"),
    ("me/x.git", "cannot end by '.git'"), ("a/b/c", "namespace/repo_name"), ("noowner", "expected owner/name"),
    ("not a model!", "alphanumeric chars"), ("me/" + "x" * 97, "maximum length is 96"),
])
def test_one_hub_id_check_is_huggingface_hubs_validator_with_an_owner(text, problem):
    """hub_ids is the only Hub id rule: models.resolve and publish's --repo-id both go through it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    got = hub_ids.repo_id_problem(text)
    assert (got is None) == (problem is None) and (problem is None or problem in got), got
    assert hub_ids.is_repo_id(text) == (problem is None)
    if problem is None or problem == "expected owner/name":  # the validator's verdict, plus: an owner is required
        validate_repo_id(text)
    else:
        with pytest.raises(HFValidationError):
            validate_repo_id(text)
    if problem is None:
        assert hub_ids.check_repo_id(text) == text
        assert models.resolve(text) == models.ModelRef(text, text, "hub")
    else:
        with pytest.raises(CreamError, match=f"--model {text!r}:"):
            hub_ids.check_repo_id(text, what="--model")
        if text.count("/") == 1 and not text.startswith("-"):  # an id-shaped name: the validator's reason is shown
            with pytest.raises(CreamError, match=r"unknown model .*\(as a Hub id: "):
                models.resolve(text)


def test_public_names_stay_importable_from_models():
    """The split by job (refs / loading / identity) keeps `cream_data.engines.models` the one import point."""
    assert models.resolve is model_refs.resolve and models.ModelRef is model_refs.ModelRef
    assert models.load is model_loading.load and models.load_tokenizer is model_loading.load_tokenizer
    assert models.content_id is model_identity.content_id
    assert models.chat_template_hash is model_identity.chat_template_hash
    for name in models.__all__:
        assert getattr(models, name) is not None
    assert not hasattr(models, "_HUB_ID") and not hasattr(model_refs, "_HUB_ID")  # the second Hub id regex is gone


def test_embedded_checkpoint_waits_for_the_process_that_builds_it(tmp_path, monkeypatch):
    """The build is guarded by a filelock lock: a second caller waits, then uses the finished checkpoint."""
    from filelock import FileLock

    monkeypatch.setenv("CREAM_CACHE", str(tmp_path))
    monkeypatch.setattr(model_refs, "_embedded_gguf", lambda: tmp_path / "never-read.gguf")
    target = tmp_path / "models" / models.EMBEDDED_ALIAS
    target.parent.mkdir(parents=True)
    builder = FileLock(target.parent / f".{models.EMBEDDED_ALIAS}.lock")
    builder.acquire()
    got = {}
    waiter = threading.Thread(target=lambda: got.setdefault("path", models.embedded_checkpoint()))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and not got  # blocked on the lock, not converting on its own
    target.mkdir()
    (target / "_complete.json").write_text("{}")  # what the builder writes last
    builder.release()
    waiter.join(10)
    assert got["path"] == target


def test_tiny_model_has_real_tokenizer_and_chat_template(tiny_model):
    model, tok, ref = models.load(str(tiny_model))
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tok)
    assert str(next(model.parameters()).dtype) == "torch.float32"


def test_template_hash_tracks_the_chat_template(tiny_model):
    _, tok, _ = models.load(str(tiny_model), with_model=False)
    h = models.chat_template_hash(tok)
    tok.chat_template = tok.chat_template.replace("system", "System")
    assert models.chat_template_hash(tok) != h


@pytest.mark.slow
def test_embedded_model_loads_and_answers_sensibly():
    model, tok, ref = models.load(models.EMBEDDED_ALIAS)
    assert ref.name == "smollm2-135m-instruct" and ref.kind == "embedded"
    assert (models.embedded_checkpoint() / "model.safetensors").exists()
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
