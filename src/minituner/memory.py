"""Peak tensor memory, measured on any device. Given code (Lab 05 uses it), never a lab file.

On a GPU, ``torch.cuda.max_memory_allocated()`` gives the peak of what PyTorch allocated. On a
CPU, PyTorch keeps no such count, and the process's resident size is useless at this scale:
importing torch alone takes hundreds of MB, and a MiniGPT weighs less than 1 MB. So
``PeakMemory`` counts for itself. It is a ``TorchDispatchMode``: it sees every tensor that an
operation creates while it is active (activations, gradients, optimizer states), adds the bytes
of each new storage when it appears, and subtracts them when Python frees it. The peak it
reports is the most bytes alive at once: those that existed before (``baseline``, counted by the
caller) plus the most that were alive among those created inside.

    with PeakMemory(baseline=tensor_bytes(model)) as mem:
        train_step(model, optimizer, batch)
    mem.peak  # bytes

It counts storages once, however many views share them, and only tensors: not the CUDA caching
allocator's slack, nor the Python objects around the tensors.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``module``, each storage counted once."""
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


class PeakMemory(TorchDispatchMode):  # type: ignore[no-untyped-call,misc,unused-ignore]
    """Counts the bytes of tensor storages alive while active; ``peak`` is the most at once.

    Args:
        baseline: bytes already held when the mode starts (the model's weights, say); they count
            towards ``current`` and ``peak`` but are never freed by the mode.
    """

    def __init__(self, baseline: int = 0) -> None:
        super().__init__()  # type: ignore[no-untyped-call,unused-ignore]
        self.baseline = baseline
        self.current = baseline
        self.peak = baseline
        self._storages: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._seen_before: set[int] = set()

    def _free(self, nbytes: int) -> None:
        self.current -= nbytes

    def _track(self, value: Any) -> None:
        if not isinstance(value, torch.Tensor):
            return
        storage = value.untyped_storage()
        if storage in self._storages:
            return
        nbytes = storage.nbytes()
        self._storages[storage] = nbytes
        # When the storage's Python object dies, its bytes are gone.
        weakref.finalize(storage, self._free, nbytes)
        self.current += nbytes
        self.peak = max(self.peak, self.current)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        inputs, _ = tree_flatten((args, kwargs or {}))
        # Storages that exist before the op (weights, the batch) are not new allocations.
        for value in inputs:
            if isinstance(value, torch.Tensor) and value.untyped_storage() not in self._storages:
                self._storages[value.untyped_storage()] = 0
        out = func(*args, **(kwargs or {}))
        outputs, _ = tree_flatten(out)
        for value in outputs:
            self._track(value)
        return out
