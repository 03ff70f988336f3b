"""Keyword arguments of traces and invokes reach the tokenizer or the model as without nnsight."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from nnsight import LanguageModel

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def gpt2(gpt2_path):
    return LanguageModel(gpt2_path, dispatch=True)


@pytest.fixture(scope="module")
def hf_gpt2(gpt2_path):
    return AutoModelForCausalLM.from_pretrained(gpt2_path).eval(), AutoTokenizer.from_pretrained(gpt2_path)


@pytest.fixture(scope="module")
def bart_path():
    from nnsight.testing.tiny_seq2seq import build_bart

    return build_bart()


def test_invoke_labels_give_hf_loss(gpt2, hf_gpt2):
    ref, tok = hf_gpt2
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    with gpt2.trace() as tracer:
        with tracer.invoke(ids, labels=ids):
            loss = gpt2.output.loss.save()
    with torch.no_grad():
        expected = ref(ids, labels=ids).loss
    torch.testing.assert_close(loss, expected)


def test_trace_labels_give_hf_loss(gpt2, hf_gpt2):
    ref, tok = hf_gpt2
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    with gpt2.trace(ids, labels=ids):
        loss = gpt2.output.loss.save()
    with torch.no_grad():
        expected = ref(ids, labels=ids).loss
    torch.testing.assert_close(loss, expected)


def test_labels_of_invokes_of_different_lengths_are_padded_out_of_the_loss(gpt2, hf_gpt2):
    ref, tok = hf_gpt2
    short = tok("Hi there", return_tensors="pt")["input_ids"]
    long = tok(PROMPT, return_tensors="pt")["input_ids"]
    with gpt2.trace() as tracer:
        with tracer.invoke(short, labels=short):
            loss = gpt2.output.loss.save()
        with tracer.invoke(long, labels=long):
            pass
    # HF's loss over the same padded batch, pads labelled -100 (ignored)
    enc = tok(["Hi there", PROMPT], return_tensors="pt", padding=True, padding_side="left")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = ref(**enc, labels=labels, position_ids=positions).loss
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("where", ["trace", "invoke"])
def test_truncation_and_max_length_reach_the_tokenizer(gpt2, where):
    if where == "trace":
        with gpt2.trace(PROMPT, truncation=True, max_length=4):
            ids = gpt2.transformer.wte.input.save()
    else:
        with gpt2.trace() as tracer:
            with tracer.invoke(PROMPT, truncation=True, max_length=4):
                ids = gpt2.transformer.wte.input.save()
    expected = gpt2.tokenizer(PROMPT, truncation=True, max_length=4)["input_ids"]
    assert ids.tolist() == [expected]


def test_max_length_without_truncation_goes_to_generate(gpt2):
    prompt_len = len(gpt2.tokenizer(PROMPT)["input_ids"])
    with gpt2.generate(PROMPT, max_length=prompt_len + 3, do_sample=False) as tracer:
        with tracer.invoke():
            out = gpt2.generator.output.save()
    assert out.shape == (1, prompt_len + 3)


def test_model_options_given_to_an_invoke_reach_the_model(gpt2, hf_gpt2):
    ref, tok = hf_gpt2
    with gpt2.trace() as tracer:
        with tracer.invoke(PROMPT, output_hidden_states=True):
            hidden = gpt2.output.hidden_states.save()
    with torch.no_grad():
        expected = ref(**tok(PROMPT, return_tensors="pt"), output_hidden_states=True).hidden_states
    assert len(hidden) == len(expected) == 5
    for got, want in zip(hidden, expected):
        torch.testing.assert_close(got, want)


def test_options_that_differ_between_invokes_are_refused_clearly(gpt2):
    with pytest.raises(ValueError, match="output_hidden_states"):
        with gpt2.trace() as tracer:
            with tracer.invoke(PROMPT, output_hidden_states=True):
                pass
            with tracer.invoke(PROMPT, output_hidden_states=False):
                pass


def test_keyword_given_to_one_invoke_only_is_refused_clearly(gpt2, hf_gpt2):
    ids = hf_gpt2[1](PROMPT, return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match="labels"):
        with gpt2.trace() as tracer:
            with tracer.invoke(ids, labels=ids):
                pass
            with tracer.invoke(ids):
                pass


def test_bart_decoder_input_ids_reach_the_model(bart_path):
    tok = AutoTokenizer.from_pretrained(bart_path)
    ref = AutoModelForSeq2SeqLM.from_pretrained(bart_path).eval()
    model = LanguageModel(ref, tokenizer=tok)
    enc = tok(PROMPT, return_tensors="pt")
    decoder = torch.tensor([[0, 5, 17, 42]])
    with model.trace() as tracer:
        with tracer.invoke(PROMPT, decoder_input_ids=decoder):
            logits = model.output.logits.save()
    with torch.no_grad():
        expected = ref(**enc, decoder_input_ids=decoder).logits
        default = ref(**enc).logits  # what the model computes when the keyword is dropped
    assert logits.shape == expected.shape != default.shape
    torch.testing.assert_close(logits, expected)


def test_bart_decoder_input_ids_batch_across_invokes(bart_path):
    tok = AutoTokenizer.from_pretrained(bart_path)
    ref = AutoModelForSeq2SeqLM.from_pretrained(bart_path).eval()
    model = LanguageModel(ref, tokenizer=tok)
    prompts = ["Hello world", "The capital of France is Paris."]
    decoders = [torch.tensor([[0, 5, 17]]), torch.tensor([[0, 9, 3]])]
    with model.trace() as tracer:
        with tracer.invoke(prompts[0], decoder_input_ids=decoders[0]):
            first = model.output.logits.save()
        with tracer.invoke(prompts[1], decoder_input_ids=decoders[1]):
            second = model.output.logits.save()
    for saved, prompt, decoder in zip((first, second), prompts, decoders):
        with torch.no_grad():
            expected = ref(**tok(prompt, return_tensors="pt"), decoder_input_ids=decoder).logits
        torch.testing.assert_close(saved, expected, rtol=1e-5, atol=1e-5)


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x, scale=1.0):
        return self.fc(x) * scale


def test_plain_module_keywords_reach_forward_and_batch_when_equal():
    from nnsight import NNsight

    torch.manual_seed(0)
    net = Scaled()
    model = NNsight(net)
    a, b = torch.randn(1, 3), torch.randn(2, 3)
    with model.trace() as tracer:
        with tracer.invoke(a, scale=3.0):
            out_a = model.output.save()
        with tracer.invoke(b, scale=3.0):
            out_b = model.output.save()
    torch.testing.assert_close(out_a, net(a, scale=3.0))
    torch.testing.assert_close(out_b, net(b, scale=3.0))
    with pytest.raises(NotImplementedError, match="scale"):
        with model.trace() as tracer:
            with tracer.invoke(a, scale=3.0):
                pass
            with tracer.invoke(b, scale=2.0):
                pass
