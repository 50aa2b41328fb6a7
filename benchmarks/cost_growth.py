"""Cost growth: time to the first training step, and memory, for folders of 10k to 1M files.

Generates, under ``--out``, one folder tree per size N: 100 labelled images (10 classes of 10),
N unlabelled images (1,000 to a sub-folder) and 1,000 test images, each a distinct 32x32 RGB
PNG (a class colour plus noise: 1.7-2.9 KB, one 4 KiB block on disk). Their lengths are few and
shared: nearly every unlabelled file is as long as some labelled or test file, the worst case
for the up-front search for copies (:mod:`comatch.data.checking` then reads almost every file).
Then, for each N and each source tree named with ``--src`` (code before and after a change),
it runs

    comatch train --labeled D/labeled --unlabeled D/unlabeled --test D/test --out RUN --iterations 1

in a child process that times the phases of the setup (each phase's own wall and CPU seconds,
nested phases subtracted) and exits as soon as the first training step is done. Recorded per
run: wall seconds from the command's start to the end of its first step, the process's CPU
seconds by then (all threads; what the wall time would be on an idle core, roughly, where the
work is not waiting for the disk), the phases, the peak memory of the process tree (summed PSS
sampled every 0.2 s, :class:`own_folder.TreeMemory`), the training process's peak RSS, and the
load average before the run (on a shared machine the wall time follows it). ``--runs 2`` runs
each command twice in a row. Files stay in the page cache after generation (the runs are warm,
as on a machine that just copied the folder); ``--cold`` evicts the data files' pages before
each run (``posix_fadvise``; the kernel's cache of folder entries stays).

    git archive 34e7261 src | tar -x -C /work/scratch/growth/main      # the code before, as a tree
    python benchmarks/cost_growth.py --out /work/scratch/growth --sizes 10000 100000 200000 1000000 \\
        --src before=/work/scratch/growth/main/src --src after=src --json docs/results/perf/cost-growth.json
    python benchmarks/cost_growth.py --out /tmp/g --sizes 2000 --src now=src          # a smoke test

Extra ``comatch train`` arguments go after ``--``. A size whose files would not fit on the
disk (with 5 GB to spare) is skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import git, provenance  # noqa: E402

CLASSES, SIDE, PER_DIR = 10, 32, 1000
LABELLED_PER_CLASS, TEST = 10, 1000
SPARE_BYTES = 5 * 2**30
"""Disk space left free after generating a size."""

# ------------------------------------------------------------------ data


def _image(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 32x32 RGB uint8 image: the colour of ``label`` plus uniform noise (+-40), distinct per draw."""
    colour = np.array([(label * 25) % 256, (label * 77) % 256, (label * 151) % 256], dtype=np.int16)
    noise = rng.integers(-40, 41, (SIDE, SIDE, 3), dtype=np.int16)
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def _write_chunk(folder: str, start: int, stop: int, seed: int, labels: list[int] | None) -> int:
    """Write images ``start..stop-1`` of one part: unlabelled (``labels`` None) into sub-folders
    of :data:`PER_DIR`, else into class folders. Returns the bytes written."""
    from PIL import Image

    rng = np.random.default_rng([seed, start])
    written = 0
    for k in range(start, stop):
        label = int(rng.integers(CLASSES)) if labels is None else labels[k]
        sub = f"{k // PER_DIR:04d}" if labels is None else f"c{label}"
        path = Path(folder) / sub / f"{'u' if labels is None else 'x'}{k:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(label, rng)).save(path, compress_level=1)
        written += path.stat().st_size
    return written


def bytes_per_file(sample: int = 200) -> float:
    """Disk bytes one generated file takes (allocated blocks, its folder entry not counted)."""
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"cost-growth-probe-{os.getpid()}"
    try:
        _write_chunk(str(probe), 0, sample, 0, None)
        used = sum(p.stat().st_blocks * 512 for p in probe.rglob("*.png"))
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return used / sample


def build(root: Path, unlabelled: int, jobs: int) -> dict:
    """Write ``root/{labeled,unlabeled,test}`` and ``root/manifest.json`` (skipped when present)."""
    if (root / "manifest.json").is_file():
        return json.loads((root / "manifest.json").read_text())
    started = time.perf_counter()
    chunk = 5000
    parts = [(root / "unlabeled", a, min(a + chunk, unlabelled), 1, None) for a in range(0, unlabelled, chunk)]
    parts.append((root / "labeled", 0, CLASSES * LABELLED_PER_CLASS, 2, [k % CLASSES for k in range(CLASSES * LABELLED_PER_CLASS)]))
    parts.append((root / "test", 0, TEST, 3, [k % CLASSES for k in range(TEST)]))
    with ProcessPoolExecutor(jobs) as pool:
        written = sum(pool.map(_write_chunk, *zip(*[(str(f), a, b, s, lab) for f, a, b, s, lab in parts])))
    manifest = {"what": "32x32 RGB PNG, a class colour plus uniform noise (benchmarks/cost_growth.py)",
                "labelled": CLASSES * LABELLED_PER_CLASS, "unlabelled": unlabelled, "test": TEST,
                "bytes": written, "seconds_to_generate": round(time.perf_counter() - started, 1)}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def evict(root: Path) -> None:
    """Drop the page-cache pages of every file under ``root`` (no root rights needed)."""
    for folder, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# ------------------------------------------------------------------ the timed child
PHASES = {
    "defaults": [("comatch.cli", "own_data_defaults")],
    "scan": [("comatch.data.folders", "scan_class_folder"), ("comatch.data.folders", "scan_images")],
    "check": [("comatch.data.folders", "keep_readable"), ("comatch.data.folders", "keep_readable_unlabelled")],
    "check: a sample decoded": [("comatch.data.checking", "check_files")],
    "overlaps": [("comatch.data.folders", "find_overlaps"), ("comatch.data.folders", "_without_copies")],
    "statistics": [("comatch.data.sources", "image_properties"), ("comatch.data.sources", "file_stats")],
    "data, other": [("comatch.training.trainer", "run_data")],
    "network": [("comatch.training.trainer.Trainer", "_build_network")],
    "trainer, other": [("comatch.training.trainer.Trainer", "__init__")],
    "run files": [("comatch.training.run_files", "write_run_files")],
    "loaders": [("comatch.training.trainer.Trainer", "loaders")],
    "first batch": [("comatch.training.trainer.Trainer", "_next_batch")],
}
"""Phase -> the functions whose time is its own (a phase's time excludes the phases it calls);
functions a source tree lacks are left out."""


def _clocks() -> np.ndarray:
    """Wall and CPU seconds (the process's, all its threads) from arbitrary origins."""
    return np.array([time.perf_counter(), time.process_time()])


class PhaseClock:
    """Each phase's own wall and CPU seconds: the time in its functions less the time in the
    phases they call."""

    def __init__(self) -> None:
        self.own: dict[str, np.ndarray] = {}
        self.stack: list[list[np.ndarray]] = []  # [start, seconds of nested phases]

    def add(self, phase: str, seconds: np.ndarray) -> None:
        self.own[phase] = self.own.get(phase, np.zeros(2)) + seconds

    def wrap(self, phase: str, function):
        def timed(*args, **kwargs):
            self.stack.append([_clocks(), np.zeros(2)])
            try:
                return function(*args, **kwargs)
            finally:
                start, nested = self.stack.pop()
                spent = _clocks() - start
                self.add(phase, spent - nested)
                if self.stack:
                    self.stack[-1][1] += spent
        return timed


def _resolve(dotted: str):
    """The module or class named ``dotted`` (``comatch.training.trainer.Trainer``); None when
    the source tree has no such thing."""
    import importlib

    try:
        return importlib.import_module(dotted)
    except ImportError:
        module, _, name = dotted.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name, None)
        except ImportError:
            return None


def child(times: Path, argv: list[str]) -> None:
    """Run ``comatch`` with ``argv``, timing :data:`PHASES`; at the end of the first training
    step write the times to ``times`` and exit."""
    from comatch import openmp

    entered, began = time.time(), _clocks()
    openmp.choose()  # as comatch.cli.main does, before torch loads (resolving the phases loads it)
    clock = PhaseClock()
    for phase, targets in PHASES.items():
        for owner_name, name in targets:
            owner = _resolve(owner_name)
            if owner is not None and hasattr(owner, name):
                setattr(owner, name, clock.wrap(phase, getattr(owner, name)))
    clock.add("imports (torch, comatch)", _clocks() - began)
    step = _resolve("comatch.training.trainer.Trainer").training_step

    def first_step(self, batch):
        began = _clocks()
        step(self, batch)
        clock.add("first step", _clocks() - began)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        found = {"first_step_done": time.time(), "main_entered": entered,
                 "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_gib": usage.ru_maxrss / 2**20,
                 "phases": {k: v.tolist() for k, v in clock.own.items()},
                 "unlabelled": len(self.data.unlabelled), "notes": list(self.data.notes)}
        times.write_text(json.dumps(found) + "\n")
        sys.stdout.flush()
        os._exit(0)

    _resolve("comatch.training.trainer.Trainer").training_step = first_step
    sys.exit(_resolve("comatch.cli").main(argv))


# ------------------------------------------------------------------ measuring
def measure(data: Path, run: Path, src: Path, extra: list[str]) -> dict:
    """One ``comatch train`` of ``data`` with the package in ``src``, to its first step."""
    from own_folder import TreeMemory  # the benchmarks' PSS sampler (its scipy stays out of the child)

    times = run.parent / f"{run.name}.times.json"
    times.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", str(times), "--", "train", "--labeled", str(data / "labeled"),
               "--unlabeled", str(data / "unlabeled"), "--test", str(data / "test"), "--out", str(run),
               "--iterations", "1", *extra]
    env = {**os.environ, "PYTHONPATH": f"{src.resolve()}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = run.parent / f"{run.name}.log"
    load = [round(x, 2) for x in os.getloadavg()]  # what else the machine was doing
    started = time.time()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        sampler = TreeMemory(process.pid)
        sampler.start()
        code = process.wait()
    sampler.done.set()
    sampler.join()
    if not times.is_file():
        raise SystemExit(f"the run ended (exit {code}) before its first step; see {log}")
    found = json.loads(times.read_text())
    first = found["first_step_done"] - started
    wall = {k: v[0] for k, v in found["phases"].items()}
    wall["interpreter start-up"] = found["main_entered"] - started
    wall["other"] = first - sum(wall.values())
    cpu = {k: v[1] for k, v in found["phases"].items()}
    order = sorted(wall, key=lambda k: -wall[k])
    return {"seconds_to_first_step": round(first, 2), "cpu_seconds": round(found["cpu_seconds"], 2),
            "peak_pss_gib": round(sampler.peak_kib / 2**20, 3), "peak_rss_gib": round(found["peak_rss_gib"], 3),
            "processes_at_peak": sampler.peak_processes, "load_before": load,
            "phases": {k: round(wall[k], 2) for k in order},
            "phases_cpu": {k: round(cpu[k], 2) for k in order if k in cpu},
            "unlabelled": found["unlabelled"], "notes": found["notes"], "log": str(log)}


def room_for(out: Path, n: int, per_file: float) -> str | None:
    """Why ``n`` more files do not fit under ``out`` (None when they do)."""
    need = (n + CLASSES * LABELLED_PER_CLASS + TEST) * per_file
    free = shutil.disk_usage(out).free
    if free - need < SPARE_BYTES:
        return (f"{n:,} files need about {need / 2**30:.1f} GiB ({per_file:.0f} bytes each) and "
                f"{free / 2**30:.1f} GiB are free ({SPARE_BYTES / 2**30:.0f} GiB kept spare)")
    return None


def table(rows: list[dict]) -> str:
    """The results as a Markdown table: per source and size, seconds, memory, the leading phases."""
    lines = ["| code | unlabelled files | run | to first step (CPU) | peak PSS (tree) | largest phases, wall (CPU) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        top = ", ".join(f"{k} {v:.1f} s ({r['phases_cpu'].get(k, 0):.1f})" for k, v in list(r["phases"].items())[:3])
        lines.append(f"| {r['src']} | {r['files']:,} | {r['run']} | {r['seconds_to_first_step']:.1f} s "
                     f"({r['cpu_seconds']:.1f} s) | {r['peak_pss_gib']:.2f} GiB | {top} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/cost-growth"), help="work folder (data-N/, runs/)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 200_000, 1_000_000],
                        help="unlabelled files (default 10000 100000 200000 1000000)")
    parser.add_argument("--src", action="append", default=[], metavar="LABEL=DIR",
                        help="a source tree holding the comatch package, by a label (repeatable; default: now=src)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each command in a row (default 1)")
    parser.add_argument("--cold", action="store_true", help="evict the data files from the page cache before each run")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes generating files")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help="after --: more `comatch train` arguments")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.extra)
    sources = [(label, Path(path)) for label, _, path in (s.partition("=") for s in args.src or ["now=src"])]
    args.out.mkdir(parents=True, exist_ok=True)
    per_file = bytes_per_file()
    rows, skipped = [], {}
    for n in args.sizes:
        data = args.out / f"data-{n}"
        if not (data / "manifest.json").is_file() and (reason := room_for(args.out, n, per_file)):
            print(f"skipping {n:,} files: {reason}", flush=True)
            skipped[n] = reason
            continue
        manifest = build(data, n, args.jobs)
        print(f"data {data}: {manifest}", flush=True)
        for label, src in sources:
            for k in range(args.runs):
                run = args.out / "runs" / f"{label}-{n}-{k}"
                shutil.rmtree(run, ignore_errors=True)
                run.parent.mkdir(parents=True, exist_ok=True)
                if args.cold:
                    evict(data)
                row = {"src": label, "files": n, "run": k + 1, **measure(data, run, src, args.extra)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(table(rows))
    if args.json:
        commits = {label: git("-C", str(src.resolve()), "rev-parse", "HEAD") or None for label, src in sources}
        result = {"rows": rows, "skipped_sizes": skipped, "bytes_per_file": round(per_file),
                  "cold": args.cold, "sources": {label: str(src) for label, src in sources},
                  "provenance": provenance(source_commits=commits, cores=os.cpu_count())}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
