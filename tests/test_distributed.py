"""Two processes (gloo, 127.0.0.1) against one: equivalence, a real run, a killed process and resume."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from comatch import CoMatchCriterion, contrastive_graph_loss, distributed, pseudo_label_graph
from comatch.cli import main
from comatch.config import build_config
from comatch.data.datasets import shard_rows
from comatch.data.sampling import IndexStream
from comatch.models import build_model
from comatch.methods.momentum import MomentumCoMatchCriterion, MomentumEncoder
from comatch.methods import Batch, CoMatch, MomentumCoMatch
from comatch.data.preprocessing import run_data
from comatch.training.batches import LABELLED_STREAM
from comatch.training.trainer import Trainer

B, N, C, D, T, t = 4, 8, 3, 8, 0.2, 0.3  # global batches: B labelled, N unlabelled
TINY = ["data.num_workers=0", "optim.batch_size=4", "optim.mu=2", "run.tensorboard=false", "run.threads=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_batch(step: int) -> tuple:
    g = torch.Generator().manual_seed(100 + step)
    return torch.rand(B, 1, 8, 8, generator=g), torch.randint(0, C, (B,), generator=g), \
        [torch.rand(N, 1, 8, 8, generator=g) for _ in range(3)]


def two_steps(variant: str, rank: int, world: int) -> list[dict]:
    """Two steps of this process's rows of the global batches; BatchNorm in eval mode."""
    torch.manual_seed(0)
    model = build_model("digits_cnn", C, in_channels=1, proj_dim=D).eval()
    settings = dict(threshold=0.3, graph_threshold=t, temperature=T, da_window=4)
    net = distributed.wrap_ddp(model, torch.device("cpu"))
    (lo_x, hi_x), (lo_u, hi_u) = shard_rows(B, rank, world), shard_rows(N, rank, world)
    if variant == "plain":
        method = CoMatch(CoMatchCriterion(C, D, 64, defer_updates=True, **settings), lambda_c=1.0)
    else:  # momentum 0 and shuffle-BN: the momentum encoder is the network, shuffled over processes
        crit = MomentumCoMatchCriterion(C, D, 64, queue_size=2 * N, defer_updates=True, **settings)
        method = MomentumCoMatch(crit, MomentumEncoder(model, momentum=0.0).eval(), lambda_c=1.0)
    crit = method.criterion

    def encode(images, network=None):
        return (net if network is None else network)(images)

    results = []
    for step in range(2):
        images_x, targets_x, views_u = global_batch(step)
        views = dict(zip(("weak", "strong", "contrastive"), [v[lo_u:hi_u] for v in views_u]))
        out = method(Batch({"weak": images_x[lo_x:hi_x]}, targets_x[lo_x:hi_x], views, step=step, seed=step), encode)
        model.zero_grad()
        # the parts that do not depend on the split (0 * L_c: DDP expects every parameter's gradient)
        (out.loss_x + crit.lambda_u * out.loss_u + 0.0 * out.loss_c).backward()
        method.commit(model)
        record = {"loss_x": out.loss_x.item(), "loss_u": out.loss_u.item(), "loss_c": out.loss_c.item(),
                  "q": out.pseudo_labels, "aligner": crit.aligner.history.clone(),
                  "bank": crit.bank.contents()[0].clone(), "bank_probs": crit.bank.contents()[1].clone(),
                  "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}
        if variant != "plain":
            record["queue"] = crit.queue.contents()[0].clone()
        if world == 1:  # the graph loss of each process's rows, computed in one process
            with torch.no_grad():
                z_s0, z_s1 = model(views_u[1])[1], model(views_u[2])[1]
            queued = (results[-1]["queue_after"] if results and variant != "plain" else None)
            record["graph_loss_of_half"] = [half_graph_loss(out.pseudo_labels, z_s0, z_s1, r, queued) for r in range(2)]
            record["queue_after"] = (z_s1, out.pseudo_labels)
        results.append(record)
    return results


def half_graph_loss(q, z_s0, z_s1, r, queued) -> float:
    lo, hi = shard_rows(N, r, 2)
    extra_q, extra_z = (queued[1], queued[0]) if queued is not None else (q[:0], z_s1[:0])
    graph = pseudo_label_graph(q[lo:hi], t, extra_q)
    return contrastive_graph_loss(z_s0[lo:hi], torch.cat([z_s1[lo:hi], extra_z]), graph, T).item()


def short_training_run(out: Path, rank: int) -> dict:
    config = build_config(overrides=[*TINY, "optim.iterations=3", "run.log_every=1", "run.eval_every=100",
                                     "run.checkpoint_every=100"])
    trainer = Trainer(config, out)
    trainer.fit()
    return {"bank": trainer.method.criterion.bank.state_dict(), "rows": trainer.batches.rows_x}


def worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    assert distributed.init_from_env("cpu", timeout_s=60) == torch.device("cpu")
    results = {v: two_steps(v, rank, world) for v in ("plain", "momentum")}
    results["run"] = short_training_run(Path(folder) / "run", rank)
    torch.save(results, Path(folder) / f"rank{rank}.pt")
    distributed.destroy()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(2, free_port(), str(folder)), nprocs=2, join=True)
    return folder, [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("variant", ["plain", "momentum"])
def test_two_processes_of_batch_b_match_one_process_of_batch_2b(two_process_results, variant):
    _, ranks = two_process_results
    reference = two_steps(variant, 0, 1)
    for step, ref in enumerate(reference):
        for r, parts in enumerate(ranks):
            got = parts[variant][step]
            # each process's losses are means over its rows: their average is the global mean
            lo, hi = shard_rows(N, r, 2)
            assert torch.allclose(got["q"], ref["q"][lo:hi], atol=1e-6), "pseudo-labels"
            assert torch.allclose(got["aligner"], ref["aligner"], atol=1e-6), "aligner history"
            assert torch.allclose(got["bank"], ref["bank"], atol=1e-6), "bank embeddings"
            assert torch.allclose(got["bank_probs"], ref["bank_probs"], atol=1e-6), "bank probabilities"
            if variant == "momentum":
                assert torch.allclose(got["queue"], ref["queue"], atol=1e-6), "queue"
            assert got["loss_c"] == pytest.approx(ref["graph_loss_of_half"][r], rel=1e-5), "graph loss of the half"
            assert got["grads"].keys() == ref["grads"].keys()
            for name, grad in ref["grads"].items():  # DDP averaged them over the processes
                assert torch.allclose(got["grads"][name], grad, rtol=1e-4, atol=1e-6), name
        for part in ("loss_x", "loss_u"):
            mean = sum(parts[variant][step][part] for parts in ranks) / 2
            assert mean == pytest.approx(ref[part], rel=1e-5), part
    assert reference[1]["loss_u"] > 0 and len(reference[1]["bank"]) == 2 * (B + N)


def test_short_run_each_bank_holds_the_entries_of_both_processes(two_process_results):
    folder, ranks = two_process_results
    banks = [parts["run"]["bank"] for parts in ranks]
    assert [parts["run"]["rows"] for parts in ranks] == [(0, 2), (2, 4)]
    for key in banks[0]:
        assert torch.equal(banks[0][key], banks[1][key]), f"the processes' banks differ in {key}"
    assert int(banks[0]["num_filled"]) == 3 * (4 + 8), "3 steps of the global batch (4 + 8)"
    # the labelled entries are the one-hot labels of the whole global batch, both halves, in order
    config = build_config(overrides=TINY)
    seed = config.seed
    data = run_data(config)
    stream = IndexStream(len(data.labelled), seed * 16 + LABELLED_STREAM)
    for step in range(3):
        labels = torch.tensor([data.labelled[int(i)][1] for i in stream.batch(step, 4)])
        rows = banks[0]["probs"][step * 12 : step * 12 + 4]
        assert torch.equal(rows, F.one_hot(labels, 10).float()), f"labelled entries of step {step}"
    lines = (folder / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if '"train"' in line] == [1, 2, 3], "rank 0 alone logs"


# ----------------------------------------------------------------- torchrun: failure and resume
def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--max-restarts", "0",
            "-m", "comatch", "train", *args]


def descendants(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return children + [d for c in children for d in descendants(c)]


def worker_pid(agent: subprocess.Popen, rank: int, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert agent.poll() is None, agent.communicate()
        for pid in descendants(agent.pid):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ and any(e.startswith(b"LOCAL_RANK=") for e in environ):
                return pid
        time.sleep(0.05)
    raise AssertionError("no worker process found")


def logged_steps(out: Path) -> int:
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return max((json.loads(line)["step"] for line in lines if line.endswith("}")), default=0)


def test_killed_process_ends_the_job_and_resume_with_one_process_continues(tmp_path, capsys):
    out, total = tmp_path / "run", 60
    env = os.environ | {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    args = ["--out", str(out), "--iterations", str(total), *TINY, "run.log_every=1", "run.eval_every=1000",
            "run.checkpoint_every=3", "run.dist_timeout=30"]
    agent = subprocess.Popen(torchrun(2, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    victim = worker_pid(agent, 1)
    deadline = time.monotonic() + 900  # a guard against a hang, not a speed requirement (loaded machines are slow)
    while logged_steps(out) < 4 or not (out / "checkpoints" / "last.pt").exists():
        assert agent.poll() is None, agent.communicate()
        assert time.monotonic() < deadline, "the run did not reach step 4 in time"
        time.sleep(0.02)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = agent.communicate(timeout=600)  # run.dist_timeout=30 s ends the survivors' wait
    assert agent.returncode != 0, stderr
    assert not [pid for pid in descendants(agent.pid)], "no worker outlives the job"
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert 3 <= saved["step"] < total and saved["world_size"] == 2

    assert main(["train", "--resume", str(out)]) == 0, "resumed by one process"
    final = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert final["step"] == total
    resume = json.loads((out / "resumes.jsonl").read_text().splitlines()[-1])
    assert resume["step"] == saved["step"] and resume["processes"] == [2, 1]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"train"' in line]
    assert steps == list(range(1, total + 1)), "the metrics read as one uninterrupted run"
