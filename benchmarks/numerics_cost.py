"""What portable numerics cost: the training step in ``run.numerics=portable`` against ``fast``.

The two modes cannot share a process (the kernels are chosen when torch loads), so each round
runs ``benchmarks/step_time.py`` once per mode, one after the other, alternating which goes first;
the figures are medians over the rounds of each run's median step (and of the network alone),
and the median of the per-round ratios portable / fast. Run it on a machine as quiet as you can
get, and say what else was running.

    python benchmarks/numerics_cost.py --setting digits --rounds 3 --steps 60
    python benchmarks/numerics_cost.py --setting wrn10-1-digits --rounds 3 --steps 20 --json out.json
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


def one_run(setting: str, mode: str, steps: int, warmup: int, threads: int | None) -> dict:
    """step_time.py's result for one mode, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(HERE / "step_time.py"), "--setting", setting, "--steps", str(steps),
               "--warmup", str(warmup), "--json", str(out), f"run.numerics={mode}",
               "run.amp=none"]  # float32 in both: the kernels compared, not bf16 (which portable never uses)
        if threads:
            cmd.append(f"run.threads={threads}")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", default="digits", help="a step_time.py setting")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, help="run.threads of both (default: PyTorch's)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"fast": [], "portable": []}
    for round_ in range(args.rounds):
        order = ("fast", "portable") if round_ % 2 == 0 else ("portable", "fast")
        for mode in order:
            runs[mode].append(one_run(args.setting, mode, args.steps, args.warmup, args.threads))
            print(f"round {round_ + 1} {mode:8s} step {runs[mode][-1]['step_median_s'] * 1e3:7.1f} ms, network alone "
                  f"{runs[mode][-1]['network_only_median_s'] * 1e3:7.1f} ms", flush=True)
    result: dict = {"setting": args.setting, "rounds": args.rounds, "steps": args.steps}
    for key in ("step_median_s", "network_only_median_s"):
        for mode in runs:
            result[f"{mode}_{key}"] = statistics.median(r[key] for r in runs[mode])
        ratios = [p[key] / f[key] for f, p in zip(runs["fast"], runs["portable"])]
        result[f"portable_over_fast_{key.removesuffix('_median_s')}"] = statistics.median(ratios)
        result[f"portable_over_fast_{key.removesuffix('_median_s')}_range"] = [min(ratios), max(ratios)]
    print(f"{args.setting}: step {result['fast_step_median_s'] * 1e3:.1f} ms fast, "
          f"{result['portable_step_median_s'] * 1e3:.1f} ms portable; portable / fast "
          f"{result['portable_over_fast_step']:.2f}x (rounds {result['portable_over_fast_step_range'][0]:.2f}-"
          f"{result['portable_over_fast_step_range'][1]:.2f}); network alone "
          f"{result['portable_over_fast_network_only']:.2f}x")
    if args.json:
        sys.path.insert(0, str(HERE))
        from provenance import provenance

        result["provenance"] = provenance(threads=args.threads)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
