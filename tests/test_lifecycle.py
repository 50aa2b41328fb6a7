"""The run's lifecycle: what happens around the training loop when the world changes under it
(images vanish, the run directory is deleted), what the guardrails record, and the layering
that keeps the lifecycle above training and tools."""

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from comatch.cli import main
from comatch.training import guardrails
from datafiles import write_class_folder

SRC = Path(__file__).resolve().parents[1] / "src" / "comatch"
FOLDER_TINY = ["optim.batch_size=2", "optim.mu=1", "data.num_workers=0", "run.eval_every=2", "run.log_every=1",
               "model.arch=wrn10_1", "data.image_size=32", "run.tensorboard=false", "run.report=false"]


def one_line_error(err: str) -> str:
    """The error line of ``err``, which holds nothing else but the run's warnings (guardrails)."""
    lines = [line for line in err.splitlines() if not line.startswith("comatch: warning: ")]
    assert len(lines) == 1 and lines[0].startswith("comatch: error: ") and "Traceback" not in err, err
    return lines[0]


def after_step(monkeypatch, step: int, action) -> None:
    """Run ``action()`` once, right after training step ``step``."""
    from comatch.training.trainer import Trainer

    train = Trainer.training_step

    def patched(self, batch):
        out = train(self, batch)
        if self.step + 1 == step:
            action()
        return out

    monkeypatch.setattr(Trainer, "training_step", patched)


# ------------------------------------------------------------------ images vanishing mid-run
def test_images_vanishing_mid_run_stop_it_with_a_checkpoint_at_the_current_step(tmp_path, monkeypatch, capsys):
    write_class_folder(tmp_path / "L", ["c0", "c1"], 4, size=(32, 32))
    write_class_folder(tmp_path / "U", ["a", "b"], 20, seed=1, size=(32, 32))
    out, away = tmp_path / "run", tmp_path / "away"
    after_step(monkeypatch, 3, lambda: shutil.move(tmp_path / "U", away))  # the whole unlabelled folder goes
    args = ["train", "--labeled", str(tmp_path / "L"), "--unlabeled", str(tmp_path / "U"), "--iterations", "30",
            "--out", str(out), *FOLDER_TINY, "run.checkpoint_every=20"]
    assert main(args) == 2
    err = one_line_error(capsys.readouterr().err)
    stopped = int(re.search(r"the run stopped at step (\d+) with a checkpoint", err).group(1))
    assert "could be read (moved, deleted or damaged since the run started)" in err
    assert f"continue with `comatch train --resume {out}`" in err
    assert stopped >= 3
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == stopped, "the checkpoint is at the step the run stopped, not the last periodic one"
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) == stopped
    listed = {line.split("\t")[0] for line in (out / "skipped_images.log").read_text().splitlines()}
    data = json.loads((out / "data.json").read_text())
    assert data["skipped_images"] == len(listed) > 0, "data.json counts what skipped_images.log lists"

    (tmp_path / "U").mkdir()
    shutil.move(away / "a", tmp_path / "U" / "a")  # half of it comes back
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), *FOLDER_TINY[:0]]) == 0
    printed = capsys.readouterr().out
    changed = re.search(r"data: changed since the checkpoint: unlabelled (\d+) -> (\d+)", printed)
    assert changed and int(changed.group(1)) - int(changed.group(2)) == 20, printed
    record = json.loads((out / "resumes.jsonl").read_text().splitlines()[-1])
    assert record["step"] == stopped and record["data_changes"] == [f"unlabelled {changed.group(1)} -> {changed.group(2)}"]
    assert json.loads((out / "summary.json").read_text())["iterations"] == 30


# ------------------------------------------------------------------ the run directory deleted mid-run
@pytest.mark.parametrize("tensorboard", [False, True], ids=["plain", "tensorboard"])
def test_deleting_the_run_directory_mid_run_is_not_success(tmp_path, monkeypatch, capsys, tensorboard):
    out = tmp_path / "run"
    after_step(monkeypatch, 3, lambda: shutil.rmtree(out))
    assert main(["train", "--iterations", "12", "--out", str(out), "run.log_every=1", "run.eval_every=5",
                 "run.checkpoint_every=4", "data.num_workers=0", "optim.batch_size=4", "optim.mu=2",
                 "run.report=false", f"run.tensorboard={str(tensorboard).lower()}"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"the run directory {out} was deleted or moved while the run trained" in err
    assert "start the run again" in err
    assert not out.exists(), "nothing recreates the deleted directory"


# ------------------------------------------------------------------ guardrails: the log is the record
def test_a_warning_printed_during_the_run_stays_in_the_record(tmp_path):
    """The mask rate stays below 2% from step 150 to 250, then recovers: the warning printed
    then is in guardrails.json, though the end of the run no longer shows it."""
    said = []
    watch = guardrails.Watch(said.append, lambda: 1200)
    records = []
    for step in range(50, 1201, 50):
        records.append({"step": step, "kind": "train", "mask_rate": 0.01 if 150 <= step <= 250 else 0.5})
        watch(records)
    assert len(said) == 1 and "from step 150 to 250" in said[0]
    (tmp_path / "summary.json").write_text(json.dumps({"iterations": 1200, "test_accuracy": 0.9}))
    found = guardrails.run_warnings(tmp_path, records, fired=watch.fired)
    assert guardrails.check(records, total_steps=1200) == [], "the end alone sees a healthy mask rate"
    assert [(w.kind, w.step) for w in found] == [("mask_rate", 250)]
    assert guardrails.read_warnings(tmp_path) == found
    assert f"comatch: warning: {found[0].message}" == said[0]


# ------------------------------------------------------------------ layering
def runtime_imports(path: Path) -> set[str]:
    """The comatch modules a file imports at run time (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("comatch")}


@pytest.mark.parametrize("package, above", [
    ("training", ("comatch.tools", "comatch.lifecycle", "comatch.cli")),
    ("tools", ("comatch.lifecycle", "comatch.cli")),
])
def test_no_import_runs_back_up_to_the_lifecycle_or_tools(package, above):
    upward = {f"{path.relative_to(SRC)} -> {name}" for path in (SRC / package).rglob("*.py")
              for name in runtime_imports(path) if name.startswith(above)}
    assert not upward, sorted(upward)


def test_the_trainer_holds_the_loop_and_the_lifecycle_the_rest():
    trainer = (SRC / "training" / "trainer.py").read_text()
    for gone in ("run_baselines", "calibrate_run", "end_of_run_report", "exclude_outliers", "__dict__"):
        assert gone not in trainer, gone
    assert not (SRC / "training" / "trust_hooks.py").exists()
    assert "__dict__" not in (SRC / "lifecycle.py").read_text()
