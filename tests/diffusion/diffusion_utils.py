"""Reference runs of the plain diffusers pipeline."""
import torch


def reference(pipe, prompt, steps, *, seed=0, hook=None, **kwargs):
    """Run ``pipe`` with a forward hook on the unet; returns (output, [noise prediction per call]).

    ``hook(call_index, noise_pred)`` may modify the prediction in place.
    """
    preds = []

    def capture(module, args, output):
        sample = output[0]
        if hook is not None:
            hook(len(preds), sample)
        preds.append(sample.clone())

    handle = pipe.unet.register_forward_hook(capture)
    try:
        out = pipe(prompt, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), **kwargs)
    finally:
        handle.remove()
    return out, preds
