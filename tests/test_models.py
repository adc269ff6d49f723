"""Model resolution: the embedded alias, local folders, Hub ids, and one-line errors."""

from __future__ import annotations

import pytest

from cream_data.engines import models
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


def test_tiny_model_has_real_tokenizer_and_chat_template(tiny_model):
    model, tok, ref = models.load(str(tiny_model))
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tok)
    assert str(next(model.parameters()).dtype) == "torch.float32"


def test_template_hash_tracks_the_chat_template(tiny_model):
    _, tok, _ = models.load(str(tiny_model), with_model=False)
    h = models.template_hash(tok)
    tok.chat_template = tok.chat_template.replace("system", "System")
    assert models.template_hash(tok) != h


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
