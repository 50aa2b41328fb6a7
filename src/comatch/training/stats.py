"""Training statistics accumulated on the device and read only at log time."""

from __future__ import annotations

import torch

from comatch import distributed
from comatch.methods.criterion import CriterionOutput


class StepStats:
    """Running sums of the per-step losses and pseudo-label statistics.

    Everything is summed into device tensors, so a step never waits for the device; the
    host reads (and resets) the averages when it logs.
    """

    FIELDS = ("loss", "loss_x", "loss_u", "loss_c", "mask_rate", "graph_edges",
              "pseudo_label_acc", "pseudo_label_acc_confident", "pseudo_label_known")
    SHARES = "pseudo_label_share"
    """Per-class share of the pseudo-labels' argmax: one ``[C]`` sum, read as ``pseudo_label_share_c``
    (the guardrails and the report read them)."""

    def __init__(self, device: torch.device, num_classes: int = 0) -> None:
        self.device = device
        self.num_classes = num_classes
        self.layout = [(name, 1) for name in self.FIELDS] + ([(self.SHARES, num_classes)] if num_classes else [])
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, torch.Tensor] = {}

    def _accumulate(self, name: str, value: torch.Tensor, count: torch.Tensor | float = 1.0) -> None:
        value = value.detach().float()
        if name in self._sums:
            self._sums[name] += value
            self._counts[name] += count
        else:
            self._sums[name] = value.clone()
            self._counts[name] = torch.as_tensor(count, dtype=torch.float32, device=self.device).clone()

    def add(self, out: CriterionOutput, truth: torch.Tensor | None) -> None:
        """Record one step's criterion output and (optionally) the unlabelled ground truth."""
        for name in ("loss", "loss_x", "loss_u", "loss_c"):
            self._accumulate(name, getattr(out, name))
        for name, value in out.stats.items():
            self._accumulate(name, value)
        if out.pseudo_labels is not None and self.num_classes:
            self._add_class_shares(out.pseudo_labels)
        if out.pseudo_labels is None or out.mask is None or truth is None:
            return
        known = truth >= 0  # [N]; unknown ground truth is -1
        predicted = out.pseudo_labels.argmax(dim=1)
        correct = (predicted == truth) & known
        confident = out.mask & known
        self._accumulate("pseudo_label_acc", correct.sum(), known.sum())
        self._accumulate("pseudo_label_acc_confident", (correct & confident).sum(), confident.sum())
        self._accumulate("pseudo_label_known", known.sum(), float(known.numel()))

    def _add_class_shares(self, pseudo_labels: torch.Tensor) -> None:
        """Count each class's share of this step's pseudo-labels (argmax of ``[N, C]``)."""
        counts = torch.bincount(pseudo_labels.argmax(dim=1), minlength=self.num_classes).float()  # [C]
        self._accumulate(self.SHARES, counts, float(pseudo_labels.shape[0]))

    def reduce_to_main(self) -> None:
        """Sum every process's running sums into rank 0 (one collective; all processes call it).

        Afterwards rank 0 holds the global sums (so its averages are over the global batch)
        and the other processes hold none. A no-op in one process.
        """
        if distributed.world_size() == 1:
            return
        width = sum(size for _, size in self.layout)
        table = torch.zeros(3, width, device=self.device)  # sums, counts, present; a [C] sum takes C columns
        col = 0
        for name, size in self.layout:
            if name in self._sums:
                table[0, col:col + size] = self._sums[name].reshape(-1)
                table[1:, col:col + size] = torch.stack([self._counts[name], torch.ones((), device=self.device)]).unsqueeze(1)
            col += size
        table = distributed.all_reduce_sum(table)
        self._sums.clear()
        self._counts.clear()
        if not distributed.is_main_process():
            return
        present, col = table[2].cpu(), 0
        for name, size in self.layout:
            if present[col] > 0:
                total = table[0, col:col + size].clone()
                self._sums[name] = total if size > 1 else total[0]
                self._counts[name] = table[1, col].clone()
            col += size

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """The running sums, so that a resumed run logs the same averages."""
        return {"sums": dict(self._sums), "counts": dict(self._counts)}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self._sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self._counts = {k: v.to(self.device) for k, v in state["counts"].items()}

    def read(self) -> dict[str, float]:
        """Averages since the last read (one host sync), then reset.

        The pseudo-label accuracies are reported only when the true class of every
        unlabelled image of the period was known (benchmarks, or unlabelled images split off
        a labelled folder): over a subset (say, the few labelled images that also sit in an
        unlabelled folder) they would not measure what their name says.
        """
        averages = self._read()
        if averages.pop("pseudo_label_known", 1.0) < 1.0:
            averages.pop("pseudo_label_acc", None)
            averages.pop("pseudo_label_acc_confident", None)
        return averages

    def _read(self) -> dict[str, float]:
        names = [n for n, _ in self.layout if n in self._sums]
        if not names:
            return {}
        sums = torch.cat([self._sums[n].reshape(-1) for n in names]).cpu()  # one host sync
        counts = torch.stack([self._counts[n] for n in names]).cpu()
        self._sums.clear()
        self._counts.clear()
        averages, col = {}, 0
        for name, count in zip(names, counts):
            size = self.num_classes if name == self.SHARES else 1
            values = sums[col:col + size] / count if count > 0 else None  # no samples: no number
            col += size
            if values is None:
                continue
            if name == self.SHARES:
                averages.update({f"{name}_{c}": v.item() for c, v in enumerate(values)})
            else:
                averages[name] = values[0].item()
        return averages
