"""Speed options: automatic mixed precision and channels-last choices, torch.compile."""

import json
import os
import subprocess
import sys

import pytest
import torch

from comatch.cli import main
from comatch.training.precision import resolve_amp, resolve_channels_last


def test_auto_precision_is_bf16_only_on_cpus_that_compute_it_natively_and_never_portable(monkeypatch):
    cpu = torch.device("cpu")
    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert resolve_amp("auto", cpu) == ("bf16" if native else "none")
        assert resolve_amp("auto", cpu, "portable") == "none", "portable numerics keep float32 everywhere"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_amp("auto", cpu) == "bf16"
    assert resolve_amp("bf16", cpu) == "bf16" and resolve_amp("none", cpu) == "none"
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the probes
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert resolve_amp("auto", cpu) == "none"


def test_auto_layout_stays_off_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_channels_last(None, cpu) is False
    assert resolve_channels_last(True, cpu) is True


def test_compiled_step_trains_and_matches_eager_loss(tmp_path):
    common = ["--iterations", "2", "run.log_every=1", "run.eval_every=2", "data.num_workers=0",
              "optim.batch_size=4", "optim.mu=1", "run.tensorboard=false", "run.report=false",
              "run.amp=none"]  # float32: compiled kernels fuse bf16 roundings differently
    losses = {}
    for name, extra in (("eager", []), ("compiled", ["run.compile=true"])):
        out = tmp_path / name
        assert main(["train", "--out", str(out), *common, *extra]) == 0
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses["compiled"]) == 2
    for eager, compiled in zip(losses["eager"], losses["compiled"]):
        assert abs(eager - compiled) < 1e-3 * max(1.0, abs(eager))


def test_a_compiled_network_keeps_its_batchnorm_momentum_when_a_budget_refits_the_length(tmp_path, capsys):
    """BatchNorm's momentum is a constant of the compiled graph: changing it recompiles the
    network (seconds that a budget's refit would take for slower steps). With run.compile the
    length's other settings follow a refit; the momentum stays as the run started, and the
    fit says so."""
    from comatch import config as cfg
    from comatch.training.trainer import Trainer

    def momenta(trainer):
        return {m.momentum for m in trainer.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}

    fitted = "run.fit_to_length=[model.bn_momentum,optim.ema_decay]"
    for compiled in (False, True):
        config = cfg.build_config("digits", overrides=[f"run.compile={str(compiled).lower()}", fitted,
                                                       "model.bn_momentum=0.01", "run.tensorboard=false"])
        trainer = Trainer(config, tmp_path / str(compiled))
        trainer.open()
        capsys.readouterr()
        trainer.pacer.set_total(400)  # a budget's fit: 20 / 400 = 0.05; EMA 1 - 10 / 400
        trainer.close()
        assert trainer.ema.decay == 0.975
        assert momenta(trainer) == ({0.01} if compiled else {0.05}), compiled
        said = [line for line in capsys.readouterr().out.splitlines() if "model.bn_momentum" in line]
        assert said == (["defaults: model.bn_momentum=0.01: kept as the run started (with run.compile a change "
                         "recompiles the network)"] if compiled else
                        ["defaults: model.bn_momentum=0.05: BatchNorm statistics average over about 20 of 400 steps"]), said


def test_grayscale_data_feeds_an_rgb_network_replicated_after_augmentation(tmp_path, capsys):
    import torch

    from comatch import config as cfg
    from comatch.training.trainer import Trainer

    config = cfg.build_config(overrides=["model.arch=wrn10_1", "model.in_channels=3", "data.image_size=16",
                                         "data.num_workers=0", "optim.batch_size=4", "optim.mu=1"])
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.data.channels == 1 and trainer.model.encoder is not None
    gray = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    rgb = trainer.normalize(gray)
    assert rgb.shape == (2, 3, 16, 16) and torch.equal(rgb[:, 0], rgb[:, 2])
    out = tmp_path / "cli"
    assert main(["train", "--out", str(out), "--iterations", "2", "model.arch=wrn10_1", "model.in_channels=3",
                 "data.image_size=16", "data.num_workers=0", "optim.batch_size=4", "optim.mu=1",
                 "run.eval_every=2", "run.report=false", "run.tensorboard=false"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == summary["test_accuracy_ema"]


def test_deterministic_mode_gives_the_same_run_on_the_cpu(tmp_path):
    common = ["--iterations", "2", "run.log_every=1", "run.eval_every=2", "data.num_workers=0",
              "optim.batch_size=4", "optim.mu=1", "run.tensorboard=false", "run.report=false"]
    try:
        assert main(["train", "--out", str(tmp_path / "a"), *common, "run.deterministic=true"]) == 0
    finally:
        torch.use_deterministic_algorithms(False)
    assert main(["train", "--out", str(tmp_path / "b"), *common]) == 0
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


_MALLOC_PROBE = """
import ctypes, sys
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
from comatch.training.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
before = libc.mallinfo2().hblks
libc.malloc(8 << 20)
print(applied, libc.mallinfo2().hblks - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_tensor_memory_stays_in_the_heap_unless_the_environment_tunes_malloc():
    """keep_freed_memory makes an 8 MiB block come from the heap (glibc would mmap it, and unmap
    it again when freed), and leaves an allocator the environment tunes alone."""
    def probe(mode: str, **env: str) -> str:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
        return subprocess.run([sys.executable, "-c", _MALLOC_PROBE, mode], capture_output=True, text=True,
                              env={**environ, **env}, check=True).stdout.split()

    assert probe("default") == ["None", "1"]  # glibc's default: a mapping of its own
    assert probe("keep") == ["True", "0"]  # from the heap
    assert probe("keep", MALLOC_ARENA_MAX="2") == ["False", "1"]  # the user's tuning wins


def test_the_training_process_loads_scikit_learn_only_for_the_digits_data():
    """scikit-learn and SciPy add ~70 MB to the trainer and to every forked loader worker;
    only the digits loader needs them (it imports them when called)."""
    code = ("import sys, comatch.training.trainer, comatch.data.sources; "
            "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _without_openmp_choice(**extra: str) -> dict[str, str]:
    """This process's environment without any OpenMP wait setting or comatch's choice marker, plus ``extra``."""
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "LOCAL_WORLD_SIZE", "COMATCH_OPENMP_CHOSEN")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


_OPENMP_PROBE = """
import builtins, io, os, time
# the machine as the probe describes it: PROBE_CORES usable cores, PROBE_BUSY of them kept busy
cores, busy = int(os.environ.pop("PROBE_CORES")), float(os.environ.pop("PROBE_BUSY"))
os.sched_getaffinity = lambda pid: set(range(cores))
ticks = iter([0, round(busy * os.sysconf("SC_CLK_TCK") * 0.1)])  # busy ticks before and after 0.1 s
real_open = builtins.open

def fake_open(path, *args, **kwargs):
    if path != "/proc/stat":
        return real_open(path, *args, **kwargs)
    busy_ticks = next(ticks)  # user, nice, system, idle, iowait, irq, softirq, steal on cpu0; idle elsewhere
    lines = [f"cpu {busy_ticks} 0 0 0 0 0 0 0"] + [f"cpu{i} {busy_ticks if i == 0 else 0} 0 0 5000 7 0 0 900"
                                             for i in range(cores)]
    return io.StringIO("\\n".join(lines) + "\\n")

builtins.open, time.sleep = fake_open, lambda seconds: None
from comatch import openmp
openmp.choose()
print(os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT"))
print(openmp.wait)
"""


def test_openmp_threads_spin_briefly_on_an_idle_machine_and_sleep_on_a_busy_one():
    """The command line's choice (before torch loads) lets idle OpenMP threads spin 10,000 times before they
    sleep when the machine is idle (other processes keep under a quarter of its usable cores busy
    over the 0.1 s before the choice) and one process trains on it, and makes them sleep at once
    otherwise; a wait policy or spin count the user sets is left as it is."""
    def probe(busy: float, cores: int = 2, **env: str) -> list[str]:
        environ = _without_openmp_choice(PROBE_BUSY=str(busy), PROBE_CORES=str(cores), **env)
        out = subprocess.run([sys.executable, "-c", _OPENMP_PROBE], capture_output=True, text=True,
                             env=environ, check=True).stdout.splitlines()
        said.append(out[1])  # what the run's start block says
        return out[0].split()

    said: list[str] = []
    assert probe(0.3) == ["PASSIVE", "10000"]  # idle: brief spinning (libgomp: the count wins)
    assert said[-1] == "idle threads spin briefly: the machine was idle at the start"
    assert probe(0.4) == ["PASSIVE", "10000"]
    assert probe(0.5) == ["PASSIVE", "None"]  # a quarter of the cores busy: sleep at once
    assert said[-1] == "idle threads sleep: the machine was busy at the start, 0.5 of 2 cores in use"
    assert probe(1.9, cores=8) == ["PASSIVE", "10000"]
    assert probe(2.0, cores=8) == ["PASSIVE", "None"]
    assert probe(0.0, cores=1) == ["PASSIVE", "None"]  # one core: nothing to spin for
    assert said[-1] == "idle threads sleep: one core"
    assert probe(0.0, LOCAL_WORLD_SIZE="2") == ["PASSIVE", "None"]  # several processes share the cores
    assert probe(0.0, OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "None"]  # a spin count would override it
    assert said[-1] == "as the environment sets: OMP_WAIT_POLICY=ACTIVE"
    assert probe(2.0, OMP_WAIT_POLICY="PASSIVE") == ["PASSIVE", "None"]
    assert probe(0.0, GOMP_SPINCOUNT="50000") == ["PASSIVE", "50000"]
    assert probe(2.0, GOMP_SPINCOUNT="50000") == ["PASSIVE", "50000"]
    # a process started by one that chose (a torchrun worker, a subprocess) chooses again
    chosen = dict(OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT="10000", COMATCH_OPENMP_CHOSEN="1")
    assert probe(0.0, LOCAL_WORLD_SIZE="2", **chosen) == ["PASSIVE", "None"]
    assert probe(2.0, **chosen) == ["PASSIVE", "None"]
    assert probe(0.0, OMP_WAIT_POLICY="PASSIVE", COMATCH_OPENMP_CHOSEN="1") == ["PASSIVE", "10000"]


def test_the_busy_cores_are_measured_now_not_from_the_load_average():
    """A job that ended a minute ago (an install, the previous run) still holds the load average
    up; the choice looks at the cores over the moment before it. With the load average at 5 on
    an idle machine, threads spin; with a busy loop on every usable core now, they sleep."""
    code = "import os; os.getloadavg = lambda: (5.0, 5.0, 5.0); " + _OPENMP_PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=_without_openmp_choice(PROBE_BUSY="0", PROBE_CORES="2")).stdout.splitlines()
    assert out == ["PASSIVE 10000", "idle threads spin briefly: the machine was idle at the start"]
    # and the real /proc/stat: a busy loop on each usable core is seen (each says when it spins)
    spinners = [subprocess.Popen([sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"],
                                 stdout=subprocess.PIPE, text=True) for _ in os.sched_getaffinity(0)]
    try:
        assert all(p.stdout.readline() == "spinning\n" for p in spinners)
        code = "from comatch import openmp; import os; openmp.choose(); print(os.environ.get('GOMP_SPINCOUNT')); print(openmp.wait)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env=_without_openmp_choice()).stdout.splitlines()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert out[0] == "None" and out[1].startswith("idle threads sleep: the machine was busy at the start, "), out


def test_the_run_does_not_claim_an_openmp_choice_made_after_torch_was_loaded():
    """Chosen after torch was loaded, the wait can no longer change: nothing is set and the start
    block says so."""
    code = ("import os, torch; from comatch import openmp; openmp.choose(); "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('COMATCH_OPENMP_CHOSEN')); print(openmp.wait)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_without_openmp_choice(),
                         check=True).stdout.splitlines()
    assert out == ["None None", "as when torch was loaded, before the choice"]


def test_importing_comatch_changes_nothing_in_the_process():
    """A library does nothing on import: no environment variable set, no sleep, no system state read
    (``/proc/stat`` is not opened), for the package and its public names."""
    code = ("import builtins, os, time; before = dict(os.environ); opened = []; real = builtins.open\n"
            "builtins.open = lambda path, *a, **k: (opened.append(str(path)), real(path, *a, **k))[1]\n"
            "time.sleep = lambda s: opened.append(f'sleep {s}')\n"
            "import comatch; comatch.CoMatchCriterion; import comatch.cli\n"
            "print(dict(os.environ) == before, [p for p in opened if p.startswith(('/proc/stat', 'sleep'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=_without_openmp_choice()).stdout.split("\n")[0]
    assert out == "True []"
