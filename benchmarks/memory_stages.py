"""Where the training process's memory goes, stage by stage, at the released code's CPU setting.

The setting of ``benchmarks/train_run.py`` (WRN-10-1, scikit-learn's digits written as CIFAR-10
files, B = 16, mu = 7: 352 images per step), without loader workers (this code's own choice on
up to 4 cores), run in this process through the trainer's own ``make_batch`` and
``training_step``. After each stage it prints the resident memory (VmRSS), its anonymous and
file-backed parts, and the high-water mark (VmHWM): starting Python, importing torch, then
torchvision (which the trainer needs), then the trainer, building the trainer (data, network, EMA, memory bank), and
each of the first training steps. The data files are written by a subprocess, so that
scikit-learn (which only the benchmark needs for them) does not count here.

    python benchmarks/memory_stages.py --steps 6
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path


def memory() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile and VmHWM of this process, in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def show(stage: str) -> None:
    m = memory()
    print(f"{stage:20s} RSS {m['VmRSS']:6.0f} MB (anonymous {m['RssAnon']:5.0f}, files {m['RssFile']:5.0f}), "
          f"peak {m['VmHWM']:6.0f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    show("python")
    import comatch  # noqa: F401  (first, as the command line does)
    import torch  # noqa: F401

    show("import torch")
    import torchvision  # noqa: F401  (torchvision.ops imports torch._dynamo)

    show("import torchvision")
    from comatch import config as cfg
    from comatch.training.trainer import Trainer

    show("import the trainer")
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "from pathlib import Path; from train_run import write_digits_as_cifar10; "
                        "write_digits_as_cifar10(Path(sys.argv[2]))", str(here), str(root / "data")], check=True)
        sys.path.insert(0, str(here))
        from train_run import SETTING

        overrides = [a for a in SETTING[2:] if not a.startswith("data.num_workers")]
        config = cfg.build_config(preset=SETTING[1], overrides=[
            *overrides, "data.num_workers=0", "run.tensorboard=false", "run.report=false", f"data.root={root / 'data'}"])
        trainer = Trainer(config, root / "run")
        show("trainer built")
        labelled, unlabelled = trainer.loaders()
        trainer.model.train()
        for step in range(args.steps):
            batch = trainer.make_batch(next(labelled), next(unlabelled))
            trainer.training_step(batch)
            trainer.step += 1
            show(f"after step {step + 1}")


if __name__ == "__main__":
    main()
