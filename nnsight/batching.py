"""``Batchable``: how a model class turns each invoke's input into one batch.

A trace runs all its invokes as one forward pass. For each invoke with an
input, ``_prepare_input(*args, **kwargs)`` normalizes it and says how many
batch rows it adds; ``_batch(batched, *args, **kwargs)`` merges a prepared
input into the batch built so far. Empty invokes (``tracer.invoke()``) add no
rows and see the whole batch.

User model classes (subclasses of :class:`~nnsight.NNsight`) override both::

    class PointCloudModel(NNsight):
        def _prepare_input(self, points, **kwargs):
            points = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 3)
            return (points.unsqueeze(0),), kwargs, 1

        def _batch(self, batched, points, **kwargs):
            (previous,), _ = batched
            return (torch.cat([previous, points]),), kwargs
"""
from typing import Any, Dict, Tuple


class Batchable:
    """The batching interface; :class:`~nnsight.NNsight` implements it for tensors."""

    def _prepare_input(self, *inputs, **kwargs) -> Tuple[tuple, Dict[str, Any], int]:
        """Normalize one invoke's input. Returns ``(args, kwargs, batch_size)``; 0 rows for none."""
        if inputs or kwargs:
            return inputs, kwargs, 1
        return inputs, kwargs, 0

    def _batch(self, batched: Tuple[tuple, Dict[str, Any]], *args, **kwargs) -> Tuple[tuple, Dict[str, Any]]:
        """Combine the batch so far, ``batched = (args, kwargs)``, with one more prepared input."""
        raise NotImplementedError(
            f"{type(self).__name__} can't batch the inputs of several invokes: implement `_batch` "
            f"(and `_prepare_input`) on it, or use one input invoke plus empty invokes.")
