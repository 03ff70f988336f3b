"""The spine on real transformers models (offline GPT-2 and Llama), checked against hooks."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nnsight import LanguageModel


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request, gpt2_path, llama_path):
    path = gpt2_path if request.param == "gpt2" else llama_path
    return request.param, path, LanguageModel(path, dispatch=True)


def layers_of(kind, model):
    return model.transformer.h if kind == "gpt2" else model.model.layers


def hf_reference(path):
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def first(x):
    return x[0] if isinstance(x, tuple) else x


def test_saved_layer_output_equals_hook_capture(lm):
    kind, path, model = lm
    with model.trace("The capital of France is"):
        hidden = first(layers_of(kind, model)[0].output).save()
        logits = model.output.logits.save()
    ref, tok = hf_reference(path)
    seen = {}
    layer = (ref.transformer.h if kind == "gpt2" else ref.model.layers)[0]
    handle = layer.register_forward_hook(lambda m, a, o: seen.setdefault("h", first(o).detach().clone()))
    with torch.no_grad():
        expected = ref(**tok("The capital of France is", return_tensors="pt")).logits
    handle.remove()
    assert torch.allclose(hidden, seen["h"], atol=1e-6)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_write_changes_downstream_like_a_hook_edit(lm):
    kind, path, model = lm
    with model.trace("Hello world"):
        h = first(layers_of(kind, model)[0].output)
        h[:, -1, :] = 0
        logits = model.output.logits.save()
    ref, tok = hf_reference(path)

    def edit(m, a, o):
        first(o)[:, -1, :] = 0
        return o

    layer = (ref.transformer.h if kind == "gpt2" else ref.model.layers)[0]
    handle = layer.register_forward_hook(edit)
    with torch.no_grad():
        expected = ref(**tok("Hello world", return_tensors="pt")).logits
    handle.remove()
    assert torch.allclose(logits, expected, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda tok: "Hello world",
    lambda tok: ["Hello world"],
    lambda tok: tok("Hello world")["input_ids"],
    lambda tok: torch.tensor([tok("Hello world")["input_ids"]]),
    lambda tok: torch.tensor(tok("Hello world")["input_ids"]),
    lambda tok: tok("Hello world", return_tensors="pt"),
    lambda tok: dict(tok("Hello world", return_tensors="pt")),
], ids=["str", "list-str", "list-ids", "tensor-2d", "tensor-1d", "batch-encoding", "dict"])
def test_input_formats_give_identical_logits(lm, make):
    kind, path, model = lm
    with model.trace(make(model.tokenizer)):
        logits = model.output.logits.save()
    with model.trace("Hello world"):
        base = model.output.logits.save()
    assert torch.equal(logits, base)


def test_a_tensor_of_ids_is_encoded_as_its_padded_rows_would_be(lm):
    """The unsplit path for a tensor of one width gives what padding its rows one by one gives:
    a new CPU long tensor (never the caller's, which an intervention could write) and a mask of ones."""
    kind, path, model = lm
    gen = torch.Generator().manual_seed(0)
    for shape, dtype in (((2, 5), torch.long), ((7,), torch.long), ((1, 3), torch.int32), ((3, 1), torch.int16),
                         ((2, 4), torch.uint8), ((1, 2), torch.bool)):
        value = torch.randint(0, 2 if dtype == torch.bool else 100, shape, generator=gen).to(dtype)
        fast = model._encode(value)
        rows = model._rows([value] if value.dim() == 1 else list(value))
        assert fast.keys() == rows.keys()
        for key in rows:
            assert fast[key].dtype == rows[key].dtype and torch.equal(fast[key], rows[key]), (shape, dtype, key)
        fast["input_ids"].add_(1)
        assert torch.equal(model._encode(value)["input_ids"], rows["input_ids"])  # the caller's ids untouched


def test_input_ids_kwarg_makes_an_implicit_invoke(lm):
    kind, path, model = lm
    ids = model.tokenizer("Hello world", return_tensors="pt")["input_ids"]
    with model.trace(input_ids=ids):
        logits = model.output.logits.save()
    assert logits.shape[:2] == ids.shape


def test_invokes_are_left_padded_into_one_batch(lm):
    kind, path, model = lm
    prompts = ["Hello", "The Eiffel Tower is in"]
    with model.trace() as tracer:
        with tracer.invoke(prompts[0]):
            short = model.output.logits.save()
        with tracer.invoke(prompts[1]):
            long = model.output.logits.save()
        with tracer.invoke():
            both = model.output.logits.save()
    ref, tok = hf_reference(path)
    enc = tok(prompts, return_tensors="pt", padding=True)
    positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # each row counts from its first token
    with torch.no_grad():
        expected = ref(**enc, position_ids=positions).logits
    assert both.shape[0] == 2 and short.shape[0] == 1 and long.shape[0] == 1
    assert torch.allclose(short, expected[:1], atol=1e-5)
    assert torch.allclose(long, expected[1:], atol=1e-5)
    assert torch.allclose(both, expected, atol=1e-5)


def test_activation_patching_between_invokes(lm):
    kind, path, model = lm
    with model.trace() as tracer:
        with tracer.invoke("The Eiffel Tower is in"):
            clean = first(layers_of(kind, model)[-1].output)[:, -1, :].clone()
        with tracer.invoke("The Colosseum is in"):
            hidden = first(layers_of(kind, model)[-1].output)  # wait here: invoke 1 has run by now
            hidden[:, -1, :] = clean
            patched = model.output.logits[:, -1, :].save()
        with tracer.invoke("The Eiffel Tower is in"):
            reference = model.output.logits[:, -1, :].save()
    assert torch.allclose(patched, reference, atol=1e-5)


def test_logit_lens_with_ad_hoc_calls(lm):
    kind, path, model = lm
    norm = model.transformer.ln_f if kind == "gpt2" else model.model.norm
    with model.trace("Hello world"):
        lens = list().save()
        for layer in layers_of(kind, model):
            lens.append(model.lm_head(norm(first(layer.output))))
        final = model.output.logits.save()
    assert len(lens) == len(layers_of(kind, model))
    assert torch.allclose(lens[-1], final, atol=1e-5)


def test_meta_loading_dispatches_on_first_trace(gpt2_path):
    model = LanguageModel(gpt2_path)
    assert model.device == torch.device("meta")
    with model.trace("Hello"):
        out = model.output.logits.save()
    assert model.device == torch.device("cpu") and out.isfinite().all()


def test_preloaded_model_needs_tokenizer(gpt2_path):
    ref, tok = hf_reference(gpt2_path)
    model = LanguageModel(ref)
    with pytest.raises(AttributeError, match="Tokenizer not found"):
        with model.trace("Hello"):
            out = model.output.save()
    model = LanguageModel(ref, tokenizer=tok)
    with model.trace("Hello"):
        out = model.output.logits.save()
    assert out.shape[0] == 1
