"""A whole `comatch train` run, timed and with its peak memory (main process plus workers).

The setting of the released CoMatch code's CPU comparison: scikit-learn's digits written as
CIFAR-10 files (upscaled to 32x32, replicated to RGB; the 540 test images as ``test_batch``),
WRN-10-1, B = 16, mu = 7 (352 images per step), 2 loader workers (one per loader;
``data.num_workers=0`` overrides it: the choice this code makes by itself on up to 4 cores).
The run is started as a subprocess; every 0.1 s the script sums the resident memory (VmRSS)
of that process and all its descendants (the loader workers) and keeps each process's own
high-water mark (VmHWM); every ``--pss-every`` seconds it also sums PSS (shared pages split
between the processes that share them). CPU time (user, system) is the process tree's, from
``wait4``. Step times come from the run's own metrics.jsonl: ``images per step /
images_per_sec`` over each ``run.log_every`` window after the first.

``--released`` runs the reconstruction of the released training script
(``benchmarks/released_loop.py``: its step, its two loaders with two workers each) under the
same sampler instead; ``--alternate N`` runs this code and the reconstruction N times each,
alternating (this code first in odd rounds, the reconstruction first in even ones), and reports
the medians, so that both see the same machine and the same page cache.

    python benchmarks/train_run.py --iterations 200
    python benchmarks/train_run.py --iterations 200 --alternate 3 data.num_workers=0
    python benchmarks/train_run.py --iterations 1920 --json out.json run.compile=true
    python benchmarks/train_run.py --preset-default          # the default `comatch train` (digits)
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTING = ["--preset", "cifar10-40", "model.arch=wrn10_1", "optim.batch_size=16", "optim.mu=7",
           "data.num_workers=1", "run.device=cpu", "data.val_per_class=0"]


def write_digits_as_cifar10(root: Path) -> None:
    """``root/cifar-10-batches-py``: the digits at 32 px RGB, 540 test images, 5 train batches.

    Args:
        root: Data root (created).
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] * (255 / 16)  # [N, 1, 8, 8]
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)  # [N, 1, 32, 32]
    images = images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).numpy()  # [N, 3, 32, 32]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    test, train = order[:540], order[540:]
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(train, 5), start=1):
        _write_batch(folder / f"data_batch_{i}", images[part], labels[part])
    _write_batch(folder / "test_batch", images[test], labels[test])
    meta = {"num_cases_per_batch": len(train) // 5, "label_names": [str(c) for c in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    entry = {"batch_label": path.name, "labels": labels.tolist(),
             "data": np.ascontiguousarray(images).reshape(len(labels), 3072),  # [n, 3*32*32]
             "filenames": [f"{i}.png" for i in range(len(labels))]}
    path.write_bytes(pickle.dumps(entry, protocol=2))


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
        out.append(p)
    return out


def status_memory(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of ``pid`` in bytes (0, 0 if it is gone). Cheap: the kernel's counters,
    no page-table walk, so sampling it does not slow the run down."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return tuple(int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]
    except (FileNotFoundError, ProcessLookupError, KeyError, ValueError):
        return 0, 0


def proportional_memory(pids: list[int]) -> int:
    """Sum of PSS (shared pages split between the processes sharing them) over ``pids``.
    Walks the page tables (smaps_rollup), which stalls the process's page faults meanwhile, so
    it is sampled rarely (``--pss-every``)."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()[1:]:
                key, value = line.split(":", 1)
                if key == "Pss":
                    total += int(value.split()[0]) * 1024
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return total


def run(command: list[str], env: dict[str, str], pss_every: float = 2.0) -> dict:
    """Run ``command`` (a Python process): wall time, CPU time and peak memory.

    Every 0.1 s the resident memory (VmRSS) of the process tree is summed; each process's own
    peak is its high-water mark (VmHWM). RSS counts the pages a forked worker shares with the
    main process in both; every ``pss_every`` s the PSS sum is sampled too (shared pages split),
    which is what the run costs.

    Args:
        command: The command line.
        env: Environment of the subprocess.
        pss_every: Seconds between PSS samples.

    Returns:
        ``{"wall_s", "user_s", "system_s", "peak_rss_bytes", "peak_pss_bytes",
        "peak_rss_per_process_bytes", "returncode"}``.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    peak_each: dict[int, int] = {}
    next_pss = time.perf_counter()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        pids = tree_pids(proc.pid)
        now = {p: status_memory(p) for p in pids}
        peak_rss = max(peak_rss, sum(r for r, _ in now.values()))
        for p, (_, hwm) in now.items():
            peak_each[p] = max(peak_each.get(p, 0), hwm)
        if time.perf_counter() >= next_pss:
            peak_pss = max(peak_pss, proportional_memory(pids))
            next_pss = time.perf_counter() + pss_every
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    if proc.returncode != 0:
        print(err, file=sys.stderr)
    return {"wall_s": time.perf_counter() - t0, "user_s": usage.ru_utime, "system_s": usage.ru_stime,
            "peak_rss_bytes": peak_rss, "peak_pss_bytes": peak_pss,
            "peak_rss_per_process_bytes": sorted(peak_each.values(), reverse=True), "returncode": proc.returncode}


def step_times(out: Path, images_per_step: int) -> list[float]:
    """Seconds per step of every logged window after the first (warm-up) one.

    Args:
        out: Run directory.
        images_per_step: Images in one step (``B (1 + 3 mu)``).

    Returns:
        Per-window mean step times.
    """
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_sec"] for r in records if r.get("kind") == "train"]
    return [images_per_step / r for r in rates[1:]]


def comatch_run(root: Path, name: str, a: argparse.Namespace) -> dict:
    """One ``comatch train`` run (the WRN setting, or the default digits run): measurements and summary."""
    out = root / name
    if a.preset_default:
        args = ["--iterations", str(a.iterations), *a.overrides]
    else:
        args = [*SETTING, "--data-root", str(root / "data"), "--iterations", str(a.iterations),
                "run.log_every=10", f"run.eval_every={a.iterations}", *a.overrides]
    command = [sys.executable, "-m", "comatch", "train", "--out", str(out), *args,
               "run.tensorboard=false", "run.report=false"]
    result = run(command, dict(os.environ), a.pss_every)
    summary = json.loads((out / "summary.json").read_text()) if result["returncode"] == 0 else {}
    times = step_times(out, 16 * 22) if summary else []
    result.update({"args": args, "iterations": a.iterations,
                   "train_wall_s": summary.get("wall_seconds"), "test_accuracy_ema": summary.get("test_accuracy_ema"),
                   "step_median_s": statistics.median(times) if times else None})
    return result


def released_run(root: Path, name: str, a: argparse.Namespace) -> dict:
    """One run of the reconstruction of the released training script: measurements and its result."""
    out = root / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve().parent / "released_loop.py"), "--root", str(root / "data"),
               "--iterations", str(a.iterations), "--workers", str(a.released_workers), "--json", str(out)]
    result = run(command, dict(os.environ), a.pss_every)
    own = json.loads(out.read_text()) if result["returncode"] == 0 else {}
    result.update({"args": command[2:-2], "iterations": a.iterations,
                   "train_wall_s": own.get("train_seconds"), "test_accuracy_ema": own.get("test_accuracy_ema"),
                   "step_median_s": own.get("step_median_s")})
    return result


def describe(result: dict) -> str:
    """One line: times, CPU, memory (summed, PSS, each process's peak) and accuracy."""
    step = result["step_median_s"]
    return (f"{result['code']}: {result['iterations']} steps, training {result['train_wall_s'] or float('nan'):.1f} s "
            f"(process {result['wall_s']:.1f} s), median step {step * 1e3 if step else float('nan'):.1f} ms, "
            f"CPU user {result['user_s']:.1f} s, system {result['system_s']:.1f} s, "
            f"peak memory (main + workers) RSS {result['peak_rss_bytes'] / 1e9:.3f} GB, "
            f"PSS {result['peak_pss_bytes'] / 1e9:.3f} GB (per process peak RSS, GB: "
            f"{', '.join(f'{b / 1e9:.2f}' for b in result['peak_rss_per_process_bytes'])}), "
            f"EMA test accuracy {result['test_accuracy_ema']}, load {result['load_average_1min_at_end']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--preset-default", action="store_true", help="time the default `comatch train` instead")
    parser.add_argument("--released", action="store_true", help="run the reconstruction of the released script instead")
    parser.add_argument("--alternate", type=int, default=0, metavar="N",
                        help="run this code and the reconstruction N times each, alternating; report medians")
    parser.add_argument("--released-workers", type=int, default=2, help="workers per loader of the reconstruction")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pss-every", type=float, default=2.0, help="seconds between PSS samples (default 2)")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides (this code's runs)")
    a = parser.parse_args()
    if a.preset_default and (a.released or a.alternate):
        parser.error("--released and --alternate run the WRN setting, not --preset-default")
    runners = {"comatch": comatch_run, "released (reconstruction)": released_run}
    if a.alternate:  # this code first in odd rounds, the reconstruction first in even ones
        order = [code for i in range(a.alternate) for code in (list(runners) if i % 2 == 0 else list(runners)[::-1])]
    else:
        order = ["released (reconstruction)" if a.released else "comatch"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not a.preset_default:
            write_digits_as_cifar10(root / "data")
        for i, code in enumerate(order):
            result = runners[code](root, f"run{i}", a)
            result.update(code=code, load_average_1min_at_end=os.getloadavg()[0])
            results.append(result)
            print(("default digits run: " if a.preset_default else "") + describe(result), flush=True)
    for code in runners if a.alternate else ():
        done = [r for r in results if r["code"] == code and r["returncode"] == 0]
        if done:
            median = {key: statistics.median(r[key] for r in done)
                      for key in ("train_wall_s", "step_median_s", "peak_rss_bytes", "peak_pss_bytes")}
            largest = statistics.median(r["peak_rss_per_process_bytes"][0] for r in done)
            print(f"median of {len(done)}, {code}: training {median['train_wall_s']:.1f} s, "
                  f"step {median['step_median_s'] * 1e3:.1f} ms, largest process's peak RSS {largest / 1e9:.3f} GB, "
                  f"summed RSS {median['peak_rss_bytes'] / 1e9:.3f} GB, PSS {median['peak_pss_bytes'] / 1e9:.3f} GB")
    if a.json:
        a.json.write_text(json.dumps(results if a.alternate else results[0], indent=2) + "\n")


if __name__ == "__main__":
    main()
