"""The shared-memory arena of one sandboxed job: tensor bytes cross without a copy through the socket.

The model process creates a memfd per job (``memfd_create``, sized sparse: pages exist
only once written) and maps it; the template passes it to the job's child with the
channel (SCM_RIGHTS), and the child maps it too. The arena has two halves, each written
by one side only, each a bump allocator reset per job:

* model -> sandbox: the model process copies a tensor the child must see into its half;
  the child's tensor is a view of those bytes (no copy), so an in-place edit by the job
  lands there and the model process copies it back into its own tensor when told;
* sandbox -> model: the child writes a new tensor into its half and sends
  ``(dtype, shape, offset)``; the model process checks the dtype against the fixed
  table, the shape and the byte range against the child's half, then copies the bytes
  out before using them (the child could still write to its half afterwards).

When a half is full, tensors travel inline in frames, as without an arena.
"""
import mmap
import os
from typing import Any, List, Optional, Tuple

import torch

from compiler.ir.values.arrays import torch_dtype

_ALIGN = 64
MAX_DIMS = 64


class ArenaError(Exception):
    """A tensor reference into the arena is out of bounds or malformed."""


def create(size: int) -> int:
    """A new memfd of ``size`` bytes (sparse); the caller owns the fd."""
    fd = os.memfd_create("nnsight-sandbox-arena", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


class Arena:
    """One side's view of a job's arena (``writer``: 0 for the model process, 1 for the child)."""

    def __init__(self, fd: int, size: int, writer: int) -> None:
        self.size = size
        self.half = size // 2
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.writer = writer
        self.start = writer * self.half
        self.next = self.start  # bump pointer in this side's half

    def put(self, tensor: torch.Tensor) -> Optional[Tuple[str, List[int], int, torch.Tensor]]:
        """Copy ``tensor`` into this side's half: ``(dtype name, shape, offset, view)``, or None when full."""
        tensor = tensor.detach()
        nbytes = tensor.numel() * tensor.element_size()
        offset = (self.next + _ALIGN - 1) // _ALIGN * _ALIGN
        if offset + nbytes > self.start + self.half or tensor.dtype.is_complex or tensor.is_quantized:
            return None
        view = self.view(tensor.dtype, list(tensor.shape), offset, nbytes)
        view.copy_(tensor)
        self.next = offset + nbytes
        return str(tensor.dtype).split(".", 1)[1], [int(d) for d in tensor.shape], offset, view

    def view(self, dtype: torch.dtype, shape: List[int], offset: int, nbytes: int) -> torch.Tensor:
        """A tensor over the arena's bytes at ``offset`` (no copy). Each has its own base, so its
        own version counter: an in-place edit marks only the tensor edited as changed."""
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(self.map, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset).reshape(shape)

    def read(self, dtype_name: Any, shape: Any, offset: Any) -> torch.Tensor:
        """A copy of the tensor the *other* side wrote at ``offset`` (every field checked first)."""
        try:
            dtype = torch_dtype(dtype_name)
        except Exception as error:
            raise ArenaError(str(error)) from None
        if type(shape) is not list or len(shape) > MAX_DIMS or any(type(d) is not int or d < 0 for d in shape):
            raise ArenaError("malformed tensor shape in the arena")
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * dtype.itemsize
        lo = (1 - self.writer) * self.half
        if type(offset) is not int or offset % _ALIGN or not lo <= offset <= lo + self.half - nbytes:
            raise ArenaError("a tensor reference points outside the sender's half of the arena")
        return self.view(dtype, shape, offset, nbytes).clone()

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a view still exports the buffer: the mapping goes with its last user
            pass
