"""Undoing what a rejected step's forward pass changed.

A training-mode forward pass updates the running statistics of every normalisation layer it
runs through (the network's and a momentum encoder's). When the loop rejects a step (its loss
or gradients were not finite), :class:`NormBuffers` puts them back, so that the rejected step
leaves the network exactly as it was; the method's own state is never changed by a forward
pass (its updates wait for ``Method.commit``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase


class NormBuffers:
    """Saves and restores the running statistics of the normalisation layers of ``modules``.

    The copies are allocated once; :meth:`save` and :meth:`restore` are one fused copy each
    (a few thousand numbers for the networks used here, no host synchronisation).

    Args:
        modules: modules whose normalisation layers (BatchNorm, SyncBatchNorm, InstanceNorm
            with running statistics) are covered; shared layers are covered once.
    """

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        seen: set[int] = set()
        self.live: list[torch.Tensor] = []
        for module in modules:
            for layer in module.modules():
                if isinstance(layer, _NormBase) and id(layer) not in seen:
                    seen.add(id(layer))
                    self.live.extend(b for b in layer.buffers(recurse=False) if b is not None)
        self.saved = [b.detach().clone() for b in self.live]
        self.floating = [b for b in self.live if b.is_floating_point()]  # what a finiteness check reads

    def save(self) -> None:
        """Copy the current statistics aside."""
        if self.live:
            torch._foreach_copy_(self.saved, self.live)

    def restore(self) -> None:
        """Put the statistics of the last :meth:`save` back."""
        if self.live:
            torch._foreach_copy_(self.live, self.saved)
