"""How long idle OpenMP threads should spin: the default run under several wait settings.

Runs ``comatch train`` (the default digits preset, ``--iterations N``, no evaluation, report
or TensorBoard) as a subprocess once per setting per round, the settings alternating within
each round, optionally with ``--busy K`` busy-looping processes on the machine (another job on
the cores). The step time is read from the run's own metrics.jsonl: ``images per step /
images_per_sec`` of every ``run.log_every`` window after the first, median over the windows.
Settings (environment of the run):

- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once),
- ``own``: nothing set: comatch's own choice as the run starts (10,000 spins, then sleep, on an
  idle machine: other processes keeping under a quarter of the cores busy over the 0.1 s before
  the choice; sleep at once otherwise); each line says which a probe started just before the
  run took (spins 0: sleep at once),
- ``spin-N``: ``GOMP_SPINCOUNT=N`` (300,000 is libgomp's default when no policy is set).

Every run also prints its final EMA test accuracy: the setting must not change any number.

    python benchmarks/openmp_wait.py --rounds 3
    python benchmarks/openmp_wait.py --rounds 3 --busy 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "own": {},
    "spin-1000": {"GOMP_SPINCOUNT": "1000"},
    "spin-3000": {"GOMP_SPINCOUNT": "3000"},
    "spin-10000": {"GOMP_SPINCOUNT": "10000"},
    "spin-30000": {"GOMP_SPINCOUNT": "30000"},
    "spin-300000": {"GOMP_SPINCOUNT": "300000"},
}


def run_once(env_extra: dict[str, str], iterations: int, out: Path) -> tuple[float, float, float, str]:
    """One default run; (median step s, training s, final EMA test accuracy, spin count used)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "COMATCH_OPENMP_CHOSEN")}
    env.update(env_extra)
    probe = "import os, comatch; print(os.environ.get('GOMP_SPINCOUNT', '0'))"  # 0: PASSIVE's
    spins = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    command = [sys.executable, "-m", "comatch", "train", "--out", str(out), "--iterations", str(iterations),
               "run.report=false", "run.tensorboard=false", "run.eval_every=1000000", "run.log_every=25"]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    images = 16 * (1 + 3 * 7)  # the digits preset: B 16, mu 7, three unlabelled views
    steps = [images / r["images_per_sec"] for r in train[1:]]
    summary = json.loads((out / "summary.json").read_text())
    return statistics.median(steps), summary["wall_seconds"], summary["test_accuracy_ema"], spins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--busy", type=int, default=0, help="busy-looping processes beside the runs")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    results: dict[str, list[tuple[float, float, float, str]]] = {name: [] for name in args.settings}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(args.rounds):
                order = args.settings if round_ % 2 == 0 else args.settings[::-1]
                for name in order:
                    out = Path(tmp) / f"{name}-{round_}"
                    results[name].append(run_once(SETTINGS[name], args.iterations, out))
                    step, seconds, acc, spins = results[name][-1]
                    print(f"round {round_ + 1} {name:12s} median step {step * 1e3:6.1f} ms, "
                          f"training {seconds:6.1f} s, EMA test accuracy {acc:.4f}, spins {spins}  "
                          f"(load {os.getloadavg()[0]:.1f}, {time.strftime('%H:%M:%S')})", flush=True)
    finally:
        for process in busy:
            process.kill()
    print(f"{args.iterations} steps, {args.busy} busy process(es) beside the runs, {os.cpu_count()} cores")
    for name, runs in results.items():
        steps = [s for s, _, _, _ in runs]
        print(f"  {name:12s} median step {statistics.median(steps) * 1e3:6.1f} ms "
              f"(runs: {', '.join(f'{s * 1e3:.1f}' for s in steps)})")


if __name__ == "__main__":
    main()
