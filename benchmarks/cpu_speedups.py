"""What each CPU speed option buys, side by side: float32, bf16 autocast and torch.compile.

Each round runs ``benchmarks/step_time.py`` once per variant, each in a fresh process (a
compiled network and its caches must not carry over), the order rotating from round to round;
the figures are medians over the rounds of each run's median step, of the network alone
(forward + backward + SGD on the same batch, interleaved with the steps) and of the paired
ratio step / network alone, and each variant's speed against float32 in the same round.
``warmup_s`` is what the first steps took (with ``run.compile=true``: the compilation, which
a run pays once at its start). Run it on a machine as quiet as you can get, and say what else
was running.

    python benchmarks/cpu_speedups.py --setting folder-digits --rounds 3 --steps 40
    python benchmarks/cpu_speedups.py --variants float32 bf16 --rounds 3 --json out.json

The accuracy a variant keeps or loses is measured by training, not here (docs/performance.md
names the runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS: dict[str, list[str]] = {
    "float32": ["run.amp=none"],
    "bf16": ["run.amp=bf16"],
    "float32+compile": ["run.amp=none", "run.compile=true"],
    "bf16+compile": ["run.amp=bf16", "run.compile=true"],
}


def one_run(setting: str, variant: str, steps: int, warmup: int) -> dict:
    """step_time.py's result for one variant, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(HERE / "step_time.py"), "--setting", setting, "--steps", str(steps),
               "--warmup", str(warmup), "--json", str(out), *VARIANTS[variant]]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", default="folder-digits", help="a step_time.py setting")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    for round_ in range(args.rounds):
        shift = round_ % len(args.variants)
        for variant in args.variants[shift:] + args.variants[:shift]:
            r = one_run(args.setting, variant, args.steps, args.warmup)
            runs[variant].append(r)
            print(f"round {round_ + 1} {variant:16s} step {r['step_median_s'] * 1e3:7.1f} ms, network alone "
                  f"{r['network_only_median_s'] * 1e3:7.1f} ms, paired step / network {r['median_paired_ratio']:.3f}, "
                  f"warm-up {r['warmup_s']:.1f} s", flush=True)
    base = args.variants[0]
    result: dict = {"setting": args.setting, "rounds": args.rounds, "steps": args.steps, "baseline": base, "variants": {}}
    print(f"{args.setting}, medians over {args.rounds} rounds (speed-up against {base} in the same round):")
    for variant, found in runs.items():
        speedups = [b["step_median_s"] / r["step_median_s"] for b, r in zip(runs[base], found)]
        summary = {
            "step_median_s": statistics.median(r["step_median_s"] for r in found),
            "network_only_median_s": statistics.median(r["network_only_median_s"] for r in found),
            "step_over_network": statistics.median(r["median_paired_ratio"] for r in found),
            "step_over_network_range": [min(r["median_paired_ratio"] for r in found),
                                        max(r["median_paired_ratio"] for r in found)],
            "speedup": statistics.median(speedups),
            "speedup_range": [min(speedups), max(speedups)],
            "warmup_s": statistics.median(r["warmup_s"] for r in found),
            "precision": found[0]["precision"],
            "shares": found[len(found) // 2]["share"],
        }
        result["variants"][variant] = summary
        print(f"  {variant:16s} step {summary['step_median_s'] * 1e3:6.1f} ms ({summary['speedup']:.2f}x, rounds "
              f"{summary['speedup_range'][0]:.2f}-{summary['speedup_range'][1]:.2f}); step / network alone "
              f"{summary['step_over_network']:.3f} ({summary['step_over_network_range'][0]:.3f}-"
              f"{summary['step_over_network_range'][1]:.3f}); warm-up {summary['warmup_s']:.1f} s")
    if args.json:
        sys.path.insert(0, str(HERE))
        from provenance import provenance

        result["provenance"] = provenance()
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
