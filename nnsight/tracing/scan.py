"""``with model.scan(input):`` — a trace on fake tensors.

The model runs under ``torch._subclasses.FakeTensorMode``: every tensor has
its real shape, dtype and device but no data, so a scan costs no memory and
checks shapes and indexing of the interventions without computing anything.
A meta-loaded model is scanned as it is (not dispatched).

Every module's inputs and output of the scan stay on its envoy afterwards
(``envoy._fake_inputs`` / ``envoy._fake_output``), so ``envoy.output`` and
``envoy.input`` answer with them outside a trace. Like any trace, values from
the body need ``.save()`` / ``nnsight.save()`` to be kept.
"""
from typing import Any

import torch

from .interleaving import InterleavingTracer


def _fake(mode, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return mode.from_tensor(value)
    if isinstance(value, tuple):
        return tuple(_fake(mode, v) for v in value)
    if isinstance(value, list):
        return [_fake(mode, v) for v in value]
    if isinstance(value, dict):
        return {k: _fake(mode, v) for k, v in value.items()}
    return value


class ScanningTracer(InterleavingTracer):
    """Trace whose execution runs on fake tensors and records every module's fake values."""

    def _interleave(self, mediators, total: int, args: tuple, kwargs: dict) -> Any:
        from torch._subclasses.fake_tensor import FakeTensorMode

        model = self.model
        handles = []
        model.__dict__["_scanning"] = True
        try:
            for _, envoy in model.named_modules():
                handles.append(envoy._module.register_forward_pre_hook(_record_inputs(envoy), with_kwargs=True))
                handles.append(envoy._module.register_forward_hook(_record_output(envoy), with_kwargs=True))
            with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                args, kwargs = _fake(mode, args), _fake(mode, kwargs)
                return super()._interleave(mediators, total, args, kwargs)
        finally:
            for handle in handles:
                handle.remove()
            model.__dict__.pop("_scanning", None)


def _record_inputs(envoy):
    def hook(module, args, kwargs):
        envoy.__dict__["_fake_inputs"] = (args, kwargs)

    return hook


def _record_output(envoy):
    def hook(module, args, kwargs, output):
        envoy.__dict__["_fake_output"] = output

    return hook
