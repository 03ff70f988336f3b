"""nnsight 0.8's ``TransformersModel``: task-picked models (GPT-2, a BERT masked LM, a BERT
classifier), ``trace``, ``generate`` (``tracer.result``), ``pipe`` (the pipeline's output),
``.task``, ``tokenizer_kwargs=``, ``peft=`` and ``device_map="auto"``, each compared with plain
transformers."""
import warnings

import pytest
import torch
import transformers

import nnsight
from nnsight import LanguageModel, TransformersModel
from nnsight.modeling.transformers import TransformersModel as FromModule
from nnsight.testing.tiny_encoders import build_bert, build_bert_classifier


@pytest.fixture(scope="module")
def bert_path():
    return build_bert()


@pytest.fixture(scope="module")
def bert_cls_path():
    return build_bert_classifier()


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BERT's `output` children move the activation to `.nns_output`
        return fn(*args, **kwargs)


def test_importable_from_both_paths():
    assert FromModule is TransformersModel is nnsight.TransformersModel
    assert issubclass(TransformersModel, LanguageModel)  # same inputs, generation and loading


def test_task_from_the_checkpoint_and_given(gpt2_path, bert_path, bert_cls_path):
    assert TransformersModel(gpt2_path).task == "text-generation"
    assert type(TransformersModel(gpt2_path)._module).__name__ == "GPT2LMHeadModel"
    masked = _quiet(TransformersModel, bert_path)
    assert masked.task == "fill-mask" and type(masked._module).__name__ == "BertForMaskedLM"
    classifier = _quiet(TransformersModel, bert_cls_path, task="sentiment-analysis")  # an alias
    assert classifier.task == "text-classification"
    assert type(classifier._module).__name__ == "BertForSequenceClassification"
    assert LanguageModel(gpt2_path).task == "text-generation"


def test_fill_mask_trace_and_pipe_match_transformers(bert_path):
    text = "the capital of france is [MASK]."
    model = _quiet(TransformersModel, bert_path)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(bert_path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(bert_path)
    with model.trace(text):
        hidden = model.bert.encoder.layer[0].nns_output.save()  # the child named `output` keeps `.output`
        logits = model.output.logits.save()
    with torch.no_grad():
        enc = tok(text, return_tensors="pt")
        expected = hf(**enc, output_hidden_states=True)
    assert torch.allclose(logits, expected.logits, atol=1e-5)
    assert torch.allclose(hidden[0] if isinstance(hidden, tuple) else hidden, expected.hidden_states[1], atol=1e-5)

    with model.pipe(text, top_k=3) as tracer:
        result = tracer.result.save()
    expected_pipe = transformers.pipeline("fill-mask", model=hf, tokenizer=tok)(text, top_k=3)
    assert [r["token_str"] for r in result] == [r["token_str"] for r in expected_pipe]
    assert [r["score"] for r in result] == pytest.approx([r["score"] for r in expected_pipe], abs=1e-6)


def test_classification_pipe_sees_interventions(bert_cls_path):
    text = "alice plays tennis every weekend."
    model = _quiet(TransformersModel, bert_cls_path, task="text-classification")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(bert_cls_path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(bert_cls_path)
    plain = transformers.pipeline("text-classification", model=hf, tokenizer=tok)
    with model.pipe(text) as tracer:
        logits = model.classifier.output.save()
        result = tracer.result.save()
    assert result == [{"label": plain(text)[0]["label"], "score": pytest.approx(plain(text)[0]["score"], abs=1e-6)}]
    with torch.no_grad():
        assert torch.allclose(logits, hf(**tok(text, return_tensors="pt")).logits, atol=1e-5)
    # an intervention changes what the pipeline postprocesses: force the other label
    other = 1 - int(logits.argmax())
    with model.pipe(text) as tracer:
        forced = torch.zeros(1, 2)
        forced[0, other] = 10.0
        model.classifier.output = forced
        changed = tracer.result.save()
    assert changed[0]["label"] == hf.config.id2label[other]
    assert model.pipe(text)[0]["label"] == plain(text)[0]["label"]  # without `with`: a plain call
    assert model.pipeline is model.pipeline and model.pipeline.model is model._module


def test_generate_result_and_pipe_text_match_transformers(gpt2_path):
    prompt = "The Eiffel Tower is in the city of"
    model = TransformersModel(gpt2_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(gpt2_path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(gpt2_path)
    with model.generate(prompt, max_new_tokens=4, do_sample=False) as tracer:
        tokens = tracer.result.save()
    expected = hf.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert torch.equal(tokens, expected)

    with model.pipe(prompt, max_new_tokens=4, do_sample=False) as tracer:
        first_block = model.transformer.h[0].output.save()
        text = tracer.result.save()
    assert text == [{"generated_text": tok.decode(expected[0], skip_special_tokens=True)}]
    assert first_block.shape[:2] == (1, expected.shape[1] - 4)  # the prompt's step


def test_pipe_invokes_batch_in_order(gpt2_path):
    model = TransformersModel(gpt2_path)
    prompts = ["Hello world", "The capital of France is", "hi"]
    plain = model.pipe(prompts, max_new_tokens=3, do_sample=False)
    with model.pipe(max_new_tokens=3, do_sample=False) as tracer:
        with tracer.invoke(prompts[0]):
            first = model.lm_head.output.save()
        with tracer.invoke(prompts[1:]):
            rest = model.lm_head.output.save()
    assert tracer.result == plain
    assert first.shape[0] == 1 and rest.shape[0] == 2


def test_tokenizer_kwargs_and_padding_side(gpt2_path, bert_cls_path):
    assert TransformersModel(gpt2_path).tokenizer.padding_side == "left"  # generation
    assert _quiet(TransformersModel, bert_cls_path).tokenizer.padding_side == "right"  # the tokenizer's own
    model = LanguageModel(gpt2_path, tokenizer_kwargs={"padding_side": "right", "model_max_length": 7})
    assert model.tokenizer.padding_side == "right" and model.tokenizer.model_max_length == 7
    adopted = TransformersModel(gpt2_path, tokenizer=model.tokenizer)
    assert adopted.tokenizer is model.tokenizer


def test_wraps_a_loaded_module(bert_cls_path):
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(bert_cls_path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(bert_cls_path)
    model = _quiet(TransformersModel, hf, tokenizer=tok)
    assert model.task == "text-classification" and model._module is hf
    with model.trace("hello world"):
        logits = model.output.logits.save()
    with torch.no_grad():
        assert torch.allclose(logits, hf(**tok("hello world", return_tensors="pt")).logits)


def test_pipe_without_a_task_is_refused(gpt2_path):
    model = TransformersModel(gpt2_path)
    model.__dict__["task"] = None  # as for a checkpoint whose class serves no pipeline task
    with pytest.raises(ValueError, match="no pipeline task"):
        model.pipe("hi")


@pytest.fixture(scope="module")
def lora_path(gpt2_path, tmp_path_factory):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_pretrained(gpt2_path)
    config = peft.LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False, fan_in_fan_out=True)
    path = tmp_path_factory.mktemp("lora")
    peft.get_peft_model(base, config).save_pretrained(str(path))
    return str(path)


@pytest.mark.parametrize("cls", [LanguageModel, TransformersModel])
def test_peft_adapter_matches_peft(gpt2_path, lora_path, cls):
    import peft

    tok = transformers.AutoTokenizer.from_pretrained(gpt2_path)
    enc = tok("Hello world", return_tensors="pt")
    plain = transformers.AutoModelForCausalLM.from_pretrained(gpt2_path).eval()
    adapted = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(gpt2_path), lora_path).eval()
    with torch.no_grad():
        expected = adapted(**enc).logits
        assert not torch.allclose(expected, plain(**enc).logits, atol=1e-3)  # the adapter matters
    model = cls(gpt2_path, peft=lora_path)
    lora = model.base_model.model.transformer.h[0].attn.c_attn.lora_A.default  # the tree before loading
    with model.trace("Hello world"):
        down = lora.output.save()
        logits = model.output.logits.save()
    assert isinstance(model._module, peft.PeftModel)
    assert down.shape == (1, 2, 4)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_device_map_auto_gives_the_same_logits(gpt2_path):
    pytest.importorskip("accelerate")
    model = LanguageModel(gpt2_path, device_map="auto")
    hf = transformers.AutoModelForCausalLM.from_pretrained(gpt2_path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(gpt2_path)
    with model.trace("The capital of France is"):
        logits = model.lm_head.output.save()
    with torch.no_grad():
        expected = hf(**tok("The capital of France is", return_tensors="pt")).logits
    assert torch.allclose(logits.cpu(), expected, atol=1e-5)


def test_pipe_options_without_a_trace_input_go_to_the_pipeline(bert_path):
    model = _quiet(TransformersModel, bert_path)
    text = "hello [MASK] world."
    with model.pipe(top_k=2) as tracer:
        with tracer.invoke(text):
            logits = model.output.logits.save()
    assert len(tracer.result) == 2 and logits.shape[0] == 1
    assert tracer.result == model.pipe(text, top_k=2)
    with pytest.raises(ValueError, match="no input"):
        with model.pipe(top_k=2) as tracer:
            pass
