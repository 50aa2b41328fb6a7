"""run.numerics: portable runs compute the same bits whatever instruction-set settings the
environment holds (what one machine can show of "on any x86-64 CPU"), fast runs follow the CPU."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from comatch import numerics

# What a user's environment may already hold, each steering a library to other kernels.
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
                 "MKL_CBWR": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def clean_environment(**extra: str) -> dict[str, str]:
    drop = set(numerics.PORTABLE_ENVIRONMENT) | {"COMATCH_NUMERICS"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def train(out, mode: str, env: dict[str, str]) -> tuple[str, dict]:
    """A short digits run; returns a hash of its final weights and its summary."""
    cmd = [sys.executable, "-m", "comatch", "train", "--out", str(out), "--iterations", "6", "run.threads=1",
           "run.tensorboard=false", "run.report=false", "run.eval_every=6", "data.num_workers=1",
           f"run.numerics={mode}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    state = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    digest = hashlib.sha256()
    for name, tensor in sorted(state["model"].items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    assert f"{mode} numerics on {numerics.cpu_model()}" in done.stdout  # the start block says it
    return digest.hexdigest(), json.loads((out / "summary.json").read_text())


def test_portable_runs_ignore_the_environments_instruction_set_settings(tmp_path):
    plain, summary = train(tmp_path / "plain", "portable", clean_environment())
    steered, _ = train(tmp_path / "steered", "portable", clean_environment(**OTHER_KERNELS))
    assert steered == plain
    assert summary["numerics"] == "portable" and summary["cpu_capability"] == "DEFAULT"
    assert summary["cpu_model"] == numerics.cpu_model() and summary["threads"] == 1


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() == "DEFAULT",
                    reason="this CPU offers ATen no vectorised kernels to choose")
def test_fast_runs_follow_the_kernels_the_environment_picks(tmp_path):
    """Why portable mode pins them: the same fast run on other kernels gives other bits."""
    plain, summary = train(tmp_path / "plain", "fast", clean_environment())
    other, _ = train(tmp_path / "other", "fast", clean_environment(ATEN_CPU_CAPABILITY="default"))
    assert other != plain
    assert summary["numerics"] == "fast" and summary["cpu_capability"] != "DEFAULT"


def test_portable_numerics_after_torch_loaded_is_one_clear_error(tmp_path):
    """In a program that imported torch first, the kernels are chosen: asking for portable
    numerics then is refused (pin, and the trainer's check), never silently run fast."""
    with pytest.raises(numerics.NumericsError, match="before torch"):
        numerics.pin("portable")
    with pytest.raises(numerics.NumericsError, match="before torch loads"):
        numerics.apply("portable")
    numerics.pin("fast")  # nothing to pin
    numerics.apply("fast")


def test_run_numerics_is_read_before_torch_from_overrides_and_files(tmp_path):
    """run.numerics given in a --config file (not on the command line) is pinned too."""
    config = tmp_path / "c.yaml"
    config.write_text("preset: digits\nrun:\n  numerics: portable\n  device: cpu\n")
    code = ("import sys, os; from comatch import cli; args = cli._parse(cli.build_parser(), sys.argv[1:]); "
            "print(cli.requested_numerics(args))")
    out = subprocess.run([sys.executable, "-c", code, "train", "--config", str(config)], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "portable"
    out = subprocess.run([sys.executable, "-c", code, "train", "--config", str(config), "run.numerics=fast"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "fast"
