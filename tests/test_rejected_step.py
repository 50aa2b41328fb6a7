"""A step rejected for a non-finite value leaves no trace: fault injection into the network's
output, for plain CoMatch and the momentum variant."""

import json
import math
from pathlib import Path

import pytest
import torch

from comatch import CoMatchCriterion
from comatch.config import build_config
from comatch.training.trainer import Trainer

TINY = ["run.log_every=1", "run.eval_every=100", "run.checkpoint_every=2", "data.num_workers=0",
        "optim.batch_size=4", "optim.mu=2", "run.tensorboard=false", "run.report=false", "optim.iterations=7"]
MOMENTUM = ["comatch.momentum=0.9", "comatch.queue_size=24", "comatch.bank_size=48"]
BAD_STEP = 3  # 0-based: after the bank, the aligner and the queue have entries


def state_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every tensor a step may change outside the optimizer: the method's state (bank,
    aligner, queue, momentum encoder) and the network's parameters and buffers."""
    state = {f"method.{k}": v for k, v in trainer.method.state_dict().items()}
    state |= {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    return {k: v.detach().clone() for k, v in state.items()}


def poison(trainer: Trainer, networks: list[torch.nn.Module]) -> None:
    """At BAD_STEP, make every output of ``networks`` NaN (logits and embeddings)."""

    def hook(module, inputs, output):
        if trainer.step != BAD_STEP:
            return None
        logits, z = output
        return logits * float("nan"), z * float("nan")

    for network in networks:
        network.register_forward_hook(hook)


def all_finite(path: Path) -> list[str]:
    """Names of the non-finite floating-point tensors in a checkpoint file."""
    state = torch.load(path, weights_only=False)
    bad = []
    for part in ("model", "ema", "method"):
        for key, tensor in state[part].items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                bad.append(f"{part}.{key}")
    return bad


@pytest.mark.parametrize("variant", ["plain", "momentum"])
def test_nan_network_output_leaves_state_bitwise_unchanged(tmp_path, variant):
    overrides = TINY + (MOMENTUM if variant == "momentum" else [])
    trainer = Trainer(build_config(overrides=overrides), tmp_path / "run")
    networks = [trainer.model] + ([trainer.method.momentum_encoder.module] if variant == "momentum" else [])
    poison(trainer, networks)
    snapshots = {}
    original = trainer.training_step

    def training_step(batch):
        if trainer.step == BAD_STEP:
            snapshots["before"] = state_of(trainer)
        out = original(batch)
        if trainer.step == BAD_STEP:
            snapshots["after"] = state_of(trainer)
            snapshots["loss"] = out.loss.item()
        return out

    trainer.training_step = training_step
    summary = trainer.fit()

    assert math.isnan(snapshots["loss"]), "the injected NaN must reach the loss"
    before, after = snapshots["before"], snapshots["after"]
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], f"the rejected step changed {changed[:5]}"
    names = set(before)
    assert any("criterion.bank.feats" in k for k in names) and any("aligner.history" in k for k in names)
    if variant == "momentum":
        assert any("criterion.queue.feats" in k for k in names) and any("momentum_encoder" in k for k in names)
        assert any("running_mean" in k and "momentum_encoder" in k for k in names)
    assert any("running_mean" in k and k.startswith("model.") for k in names)
    assert summary["skipped_steps"] == 1 and summary["iterations"] == 7 and not summary["stopped"]
    for name in ("last.pt", "previous.pt"):
        assert all_finite(tmp_path / "run" / "checkpoints" / name) == []
    train_lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in train_lines if r["kind"] == "train" and r["step"] > BAD_STEP + 1)


def test_criterion_in_own_loop_ignores_a_nan_call():
    """Through the API alone: one call with a NaN output records nothing, and the calls after
    it are as if it had not happened."""
    torch.manual_seed(0)
    C, D, B, N = 3, 4, 2, 6

    def call(crit, seed, nan=False):
        g = torch.Generator().manual_seed(seed)
        logits_u_w = torch.randn(N, C, generator=g) * (float("nan") if nan else 1.0)
        z = torch.nn.functional.normalize(torch.randn(B + 3 * N, D, generator=g), dim=1)
        return crit(torch.randn(B, C, generator=g), torch.randint(0, C, (B,), generator=g), logits_u_w,
                    torch.randn(N, C, generator=g), z_x=z[:B], z_u_w=z[B:B + N], z_u_s0=z[B + N:B + 2 * N],
                    z_u_s1=z[B + 2 * N:])

    clean, poisoned = CoMatchCriterion(C, D, 16, threshold=0.3), CoMatchCriterion(C, D, 16, threshold=0.3)
    call(clean, 1), call(poisoned, 1)
    assert math.isnan(call(poisoned, 2, nan=True).loss.item())
    later = [(call(clean, s).loss.item(), call(poisoned, s).loss.item()) for s in range(3, 8)]
    assert all(a == b and math.isfinite(a) for a, b in later), later
    for key, tensor in clean.state_dict().items():
        assert torch.equal(tensor, poisoned.state_dict()[key]), key
