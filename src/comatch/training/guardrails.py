"""Guardrails: warnings, with the numbers, when a run is going wrong in a known way.

Pure functions of a run's metrics history (the records of ``metrics.jsonl``), its summary
and its baselines (``baseline.json`` of ``comatch baseline``, when present). While a run
trains, a :class:`Watch` reads its records after each log and prints each warning once; at
the end, :func:`run_warnings` adds the end-of-run findings and writes every warning the run
printed to ``guardrails.json``, which the report lists.

* :func:`mask_rate_near_zero`: the pseudo-labels never pass the confidence threshold, so the
  unlabelled data teaches nothing (``L_u`` is zero).
* :func:`pseudo_labels_pile_up`: the pseudo-labels concentrate on a few classes (the
  effective number of classes ``exp(H(share))`` falls below half of the prior's).
* :func:`below_baseline`: the finished run is less accurate than a classifier fitted on the
  labelled images alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GUARDRAILS_FILE = "guardrails.json"
MASK_RATE_FLOOR = 0.02  # below this share of confident pseudo-labels the unlabelled loss is ~0
MASK_RATE_RECORDS = 3  # ... for this many training records in a row
MIN_STEP_SHARE = 0.2  # and not before this share of the run (the first steps are allowed to be unsure)
PILE_UP_RATIO = 0.5  # effective classes below this share of the prior's effective classes
PILE_UP_RECORDS = 2
BASELINE_MARGIN = 0.005  # accuracy below a baseline by more than this fires

SHARE = re.compile(r"pseudo_label_share_(\d+)$")


@dataclass(frozen=True)
class Warning:
    """One guardrail's finding: ``kind``, the ``step`` it refers to and the ``message``."""

    kind: str
    step: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _train(records: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == "train" and r.get(key) is not None]


def mask_rate_near_zero(records: Sequence[dict[str, Any]], total_steps: int | None = None,
                        floor: float = MASK_RATE_FLOOR, run_of: int = MASK_RATE_RECORDS) -> Warning | None:
    """Fires when the last ``run_of`` training records all have ``mask_rate < floor`` and the
    run is past :data:`MIN_STEP_SHARE` of ``total_steps`` (when known).

    Returns:
        The warning, or None.
    """
    rows = _train(records, "mask_rate")
    if len(rows) < run_of:
        return None
    last = rows[-run_of:]
    step = int(last[-1]["step"])
    if total_steps and step < MIN_STEP_SHARE * total_steps:
        return None
    rates = [float(r["mask_rate"]) for r in last]
    if max(rates) >= floor:
        return None
    return Warning("mask_rate", step, (
        f"the mask rate stayed below {floor:.0%} (at most {max(rates):.2%}) from step {int(last[0]['step'])} to {step}: "
        "almost no pseudo-label reaches the confidence threshold, so the unlabelled images teach nothing; "
        "lower the threshold (comatch.threshold, or fixmatch.threshold for FixMatch; e.g. 0.8), train longer, or check that the labelled images are right"))


def class_shares(record: dict[str, Any]) -> list[float]:
    """The per-class shares of the pseudo-labels in a training record (``pseudo_label_share_c``)."""
    found = {int(m.group(1)): float(v) for k, v in record.items() if (m := SHARE.match(k)) and v is not None}
    return [found[c] for c in sorted(found)] if found else []


def effective_classes(shares: Sequence[float]) -> float:
    """``exp(H(share))``: C for an even spread, 1 when everything is one class."""
    total = sum(shares)
    if total <= 0:
        return 0.0
    return math.exp(-sum((s / total) * math.log(s / total) for s in shares if s > 0))


def pseudo_labels_pile_up(records: Sequence[dict[str, Any]], prior: Sequence[float] | None = None,
                          ratio: float = PILE_UP_RATIO, run_of: int = PILE_UP_RECORDS,
                          class_names: Sequence[str] | None = None) -> Warning | None:
    """Fires when, in each of the last ``run_of`` training records, the pseudo-labels' effective
    number of classes is below ``ratio`` times the prior's (uniform: ``C``).

    Returns:
        The warning (naming the largest classes and their shares), or None.
    """
    rows = [r for r in records if r.get("kind") == "train" and class_shares(r)]
    if len(rows) < run_of:
        return None
    last = rows[-run_of:]
    shares = class_shares(last[-1])
    expected = effective_classes(prior) if prior else float(len(shares))
    observed = [effective_classes(class_shares(r)) for r in last]
    if max(observed) >= ratio * expected:
        return None
    names = class_names or [str(c) for c in range(len(shares))]
    top = sorted(range(len(shares)), key=lambda c: -shares[c])[:3]
    listing = ", ".join(f"{names[c]} {shares[c]:.0%}" for c in top)
    return Warning("pile_up", int(last[-1]["step"]), (
        f"the pseudo-labels pile onto a few classes: {observed[-1]:.1f} effective classes of {expected:.1f} expected "
        f"at step {int(last[-1]['step'])} (largest: {listing}); keep comatch.alignment on, set comatch.da_prior to the "
        "true class frequencies if they are skewed, or add labels of the classes that vanish"))


def baseline_accuracies(baseline: dict[str, Any] | None) -> dict[str, float]:
    """The baselines' test accuracies in a ``baseline.json`` by name (``features.*``,
    ``pixels.*`` and ``supervised`` when present)."""
    if not baseline:
        return {}
    found: dict[str, float] = {}
    for part in ("features", "pixels"):
        section = baseline.get(part)
        if isinstance(section, dict):
            found.update({f"{part}.{k}": float(v) for k, v in section.items() if isinstance(v, float)})
    supervised = baseline.get("supervised")
    if isinstance(supervised, (int, float)):
        found["supervised"] = float(supervised)
    elif isinstance(supervised, dict) and isinstance(supervised.get("test_accuracy"), (int, float)):
        found["supervised"] = float(supervised["test_accuracy"])
    return found


def below_baseline(accuracy: float | None, baseline: dict[str, Any] | None, step: int = 0,
                   margin: float = BASELINE_MARGIN) -> Warning | None:
    """Fires when the run's final test accuracy is below its best baseline by more than ``margin``."""
    scores = baseline_accuracies(baseline)
    if accuracy is None or not scores:
        return None
    name = max(scores, key=lambda k: scores[k])
    if accuracy >= scores[name] - margin:
        return None
    return Warning("below_baseline", step, (
        f"the run ended at {accuracy:.2%} test accuracy, below its {name} baseline ({scores[name]:.2%}, "
        f"baseline.json): the unlabelled images did not help; check the mask rate and the pseudo-label "
        "accuracy, the augmentations, or train longer"))


def check(records: Sequence[dict[str, Any]], *, total_steps: int | None = None,
          summary: dict[str, Any] | None = None, baseline: dict[str, Any] | None = None,
          prior: Sequence[float] | None = None, class_names: Sequence[str] | None = None) -> list[Warning]:
    """Every guardrail that fires on a run's history (and, with a summary, on its end)."""
    found = [mask_rate_near_zero(records, total_steps), pseudo_labels_pile_up(records, prior, class_names=class_names)]
    if summary:
        accuracy = summary.get("test_accuracy_ema", summary.get("test_accuracy"))
        found.append(below_baseline(accuracy, baseline, int(summary.get("iterations") or 0)))
    return [w for w in found if w is not None]


def recent_training(records: Sequence[dict[str, Any]], count: int = 8) -> list[dict[str, Any]]:
    """The last ``count`` training records (the in-run guardrails look at the last few only), found
    from the end, so that a log line costs the same at step 100 as at step 1,000,000."""
    found = []
    for record in reversed(records):
        if record.get("kind") == "train":
            found.append(record)
            if len(found) == count:
                break
    return found[::-1]


class Watch:
    """The guardrails while a run trains: called with the run's records after each log, it
    says each warning once, when it first fires, and keeps it in :attr:`fired`.

    Args:
        say: prints a line.
        total_steps: the run's current length (it may change under a time budget).
        prior: the labelled class frequencies.
        class_names: the class names.
        fired: warnings already printed (an earlier part of a resumed run).
    """

    def __init__(self, say: Callable[[str], None], total_steps: Callable[[], int], *,
                 prior: Sequence[float] | None = None, class_names: Sequence[str] | None = None,
                 fired: Sequence[Warning] = ()) -> None:
        self.say, self.total_steps, self.prior, self.class_names = say, total_steps, prior, class_names
        self.fired: list[Warning] = list(fired)

    def __call__(self, records: Sequence[dict[str, Any]]) -> None:
        seen = {w.kind for w in self.fired}
        for warning in check(recent_training(records), total_steps=self.total_steps(), prior=self.prior,
                             class_names=self.class_names):
            if warning.kind not in seen:
                self.fired.append(warning)
                self.say(f"comatch: warning: {warning.message}")


def merged(fired: Sequence[Warning], found: Sequence[Warning]) -> list[Warning]:
    """The warnings printed during a run and those found at its end, one per kind (the
    end-of-run finding replaces an earlier one of its kind), in step order."""
    kinds = {w.kind for w in found}
    return sorted([w for w in fired if w.kind not in kinds] + list(found), key=lambda w: w.step)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def run_warnings(run_dir: str | Path, records: Sequence[dict[str, Any]], *, fired: Sequence[Warning] = (),
                 prior: Sequence[float] | None = None, write: bool = True) -> list[Warning]:
    """Every guardrail's finding on a finished run (its history, summary and baselines), with
    the warnings ``fired`` while it trained; written to ``guardrails.json``."""
    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "summary.json") or {}
    data = _read_json(run_dir / "data.json") or {}
    found = check(records, total_steps=summary.get("iterations"), summary=summary,
                  baseline=_read_json(run_dir / "baseline.json"), prior=prior, class_names=data.get("classes"))
    every = merged(fired, found)
    if write:
        (run_dir / GUARDRAILS_FILE).write_text(json.dumps([w.as_dict() for w in every], indent=2) + "\n")
    return every


def read_warnings(run_dir: str | Path) -> list[Warning] | None:
    """The warnings recorded in ``guardrails.json`` (what the run printed), or None when the
    file is missing or not a list of warnings."""
    found = _read_json(Path(run_dir) / GUARDRAILS_FILE)
    if not isinstance(found, list):
        return None
    try:
        return [Warning(str(w["kind"]), int(w["step"]), str(w["message"])) for w in found]
    except (KeyError, TypeError, ValueError):
        return None


def labelled_counts(run_dir: str | Path) -> list[float] | None:
    """The labelled class counts written at the end of the run (``labelled_counts.json``)."""
    found = _read_json(Path(run_dir) / "labelled_counts.json")
    return [float(v) for v in found] if isinstance(found, list) else None
