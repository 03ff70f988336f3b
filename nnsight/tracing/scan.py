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


class ServedScanningTracer(ScanningTracer):
    """A scan run for a remote client (``model.scan(..., remote=True)``).

    Fake tensors cannot travel (they belong to the server's fake mode), so each
    saved one goes back as a meta tensor: the same shape and dtype, no data,
    which is all a scan knows. The recorded ``_fake_inputs``/``_fake_output``
    are cleared afterwards: they describe one client's input, and a hosted
    model must not keep them from job to job.
    """

    def run_program(self, compiled: Any, ns: Any) -> Any:
        try:
            return _as_meta(super().run_program(compiled, ns))
        finally:
            for _, envoy in self.model.named_modules():
                envoy.__dict__.pop("_fake_inputs", None)
                envoy.__dict__.pop("_fake_output", None)


def _as_meta(value: Any) -> Any:
    from torch._subclasses.fake_tensor import FakeTensor

    if isinstance(value, FakeTensor):
        return torch.empty(tuple(value.shape), dtype=value.dtype, device="meta")
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_as_meta(v) for v in value) if type(value) is tuple else value
    if isinstance(value, list):
        return [_as_meta(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_meta(v) for k, v in value.items()}
    return value
