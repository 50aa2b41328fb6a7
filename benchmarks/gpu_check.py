"""The GPU measurements of docs/performance.md in one script (issue 14, part 4).

1. The CIFAR setting (WRN-28-2, B = 64, mu = 7, random 32x32 RGB images) through
   ``step_time.py``: steps per second, the step / network-alone ratio and peak GPU memory for
   fp32, bf16 autocast, channels-last, ``run.compile=true`` and ``data.augment_on=gpu`` alone,
   and all of them combined.
2. A CIFAR-shaped run that checks the bf16 path trains: ``comatch train --preset cifar10-40``
   with WRN-28-2 and ``run.amp=bf16`` on the digits written as CIFAR-10 files (32 px RGB,
   ``train_run.py``), for ``--minutes`` minutes (``run.budget``): the training loss must fall
   (mean of the last three logged losses below the mean of the first three) and no step may be
   skipped as non-finite.

Writes ``OUT/step_<name>.json``, ``OUT/bf16_run/`` and ``OUT/gpu_check.md`` (the tables for the
performance page); exits 1 if the bf16 run fails its check.

    python benchmarks/gpu_check.py --out gpu-results              # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --out /tmp/g --steps 2 --warmup 1 --minutes 0.5 --device cpu \
        model.arch=wrn10_1 optim.batch_size=4 optim.mu=1 run.log_every=2    # a dry run on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

VARIANTS: dict[str, list[str]] = {  # name -> overrides on top of the setting
    "fp32": ["run.amp=none", "run.channels_last=false"],
    "bf16": ["run.amp=bf16", "run.channels_last=false"],
    "channels-last": ["run.amp=none", "run.channels_last=true"],
    "compile": ["run.amp=none", "run.channels_last=false", "run.compile=true"],
    "augment-on-gpu": ["run.amp=none", "run.channels_last=false", "data.augment_on=gpu"],
    "all": ["run.amp=bf16", "run.channels_last=true", "run.compile=true", "data.augment_on=gpu"],
}


def step_variants(out: Path, steps: int, warmup: int, device: str, extra: list[str]) -> dict[str, dict]:
    """``step_time.py --setting wrn28-2-cifar`` for every variant; its JSON results by name."""
    results = {}
    for name, overrides in VARIANTS.items():
        if device == "cpu" and name in ("augment-on-gpu", "all"):
            overrides = [o for o in overrides if not o.startswith("data.augment_on")]
        path = out / f"step_{name}.json"
        subprocess.run([sys.executable, str(HERE / "step_time.py"), "--setting", "wrn28-2-cifar",
                        "--steps", str(steps), "--warmup", str(warmup), "--json", str(path),
                        f"run.device={device}", *overrides, *extra], check=True)
        results[name] = json.loads(path.read_text())
    return results


def bf16_run(out: Path, minutes: float, device: str, extra: list[str]) -> dict:
    """The CIFAR-shaped bf16 run and its check: ``{"passed", "first_losses", "last_losses", ...}``."""
    sys.path.insert(0, str(HERE))
    from train_run import write_digits_as_cifar10

    data, run = out / "data", out / "bf16_run"
    write_digits_as_cifar10(data)
    budget = f"{max(1, round(minutes * 60))}s"
    subprocess.run([sys.executable, "-m", "comatch", "train", "--preset", "cifar10-40", "--data-root", str(data),
                    "--out", str(run), "--budget", budget, f"run.device={device}", "run.amp=bf16",
                    "model.arch=wrn28_2", "optim.batch_size=64", "optim.mu=7", "data.val_per_class=0",
                    "run.log_every=10", "run.report=false", "run.tensorboard=false", *extra], check=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r.get("kind") == "train" and "loss" in r]
    summary = json.loads((run / "summary.json").read_text())
    first, last = losses[:3], losses[-3:]
    passed = (len(losses) >= 6 and statistics.mean(last) < statistics.mean(first)
              and summary.get("skipped_steps", 0) == 0)
    return {"passed": passed, "steps": summary.get("iterations"), "first_losses": first, "last_losses": last,
            "skipped_steps": summary.get("skipped_steps"), "test_accuracy_ema": summary.get("test_accuracy_ema")}


def table(results: dict[str, dict], check: dict) -> str:
    lines = ["| variant | steps/s | step ms (median) | step / network alone | peak GPU memory (GiB) |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        memory = r.get("cuda_peak_memory_bytes")
        shown = "-" if memory is None else f"{memory / 2**30:.2f}"
        lines.append(f"| {name} | {1 / r['step_median_s']:.2f} | {r['step_median_s'] * 1e3:.1f} | "
                     f"{r['median_paired_ratio']:.3f} | {shown} |")
    lines += ["", f"bf16 run: {check['steps']} steps, loss {statistics.mean(check['first_losses']):.3f} "
                  f"(first three logs) -> {statistics.mean(check['last_losses']):.3f} (last three), "
                  f"{check['skipped_steps']} skipped step(s), EMA test accuracy {check['test_accuracy_ema']}: "
                  f"{'passed' if check['passed'] else 'FAILED'}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation happens here)")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the bf16 run")
    parser.add_argument("--device", default="cuda", help="cuda (cpu: a dry run of the script itself)")
    parser.add_argument("extra", nargs="*", help="key=value overrides for every run (a dry run shrinks them)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = step_variants(args.out, args.steps, args.warmup, args.device, args.extra)
    check = bf16_run(args.out, args.minutes, args.device, args.extra)
    text = table(results, check)
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    sys.exit(0 if check["passed"] else 1)


if __name__ == "__main__":
    main()
