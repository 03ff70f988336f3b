"""Shared by the peer programs: model paths, plain-HF references and JSON output.

Each program runs unchanged under this package and under nnsight 0.8.1, so this file uses
nothing but os, json, torch and transformers.
"""
import json
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

GPT2 = os.environ["NNSIGHT_PEER_GPT2"]
LLAMA = os.environ["NNSIGHT_PEER_LLAMA"]
BERT = os.environ["NNSIGHT_PEER_BERT"]  # BertForMaskedLM
BERT_CLS = os.environ["NNSIGHT_PEER_BERT_CLS"]  # BertForSequenceClassification
BART = os.environ["NNSIGHT_PEER_BART"]  # BartForConditionalGeneration


def hf(path):
    """The plain Hugging Face model and tokenizer: the reference each program checks against."""
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return model, AutoTokenizer.from_pretrained(path)


def first(x):
    """A block's hidden states whether the block returns a tuple or a tensor."""
    return x[0] if isinstance(x, (tuple, list)) else x


def num(t, digits=4):
    """A tensor as rounded nested lists, a number as a rounded float."""
    if isinstance(t, torch.Tensor):
        t = t.detach().float().cpu()
        return [round(v, digits) for v in t.flatten().tolist()][:64]
    return round(float(t), digits)


def close(a, b, tol=1e-4):
    return torch.allclose(a.detach().float().cpu(), b.detach().float().cpu(), atol=tol, rtol=tol)


def emit(**out):
    print("PEER-PROGRAM-OUTPUT " + json.dumps(out, sort_keys=True))
