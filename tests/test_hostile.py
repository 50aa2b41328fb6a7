"""A hostile week of real use (issue 15): damaged and doubled runs, full disks, bad paths, bad API
input. Each test reproduces one case; each error is one line on stderr with exit code 2."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from comatch import config as cfg
from comatch import contrastive_graph_loss, distribution_alignment, memory_smoothed_labels, pseudo_label_graph
from comatch import pseudo_label_loss
from comatch.cli import main
from comatch.data import build_data
from comatch.errors import UserError
from comatch.training.checkpoint import save_rotating
from comatch.training.runtime import atomic_write_text
from datafiles import save_image, write_class_folder

TINY = ["run.log_every=1", "run.eval_every=5", "run.checkpoint_every=3", "data.num_workers=0",
        "optim.batch_size=4", "optim.mu=2", "run.tensorboard=false", "run.report=false"]
FOLDER_TINY = ["optim.batch_size=2", "optim.mu=1", "data.num_workers=0", "run.eval_every=2", "run.log_every=1",
               "model.arch=wrn10_1", "data.image_size=32", "run.tensorboard=false", "run.report=false"]


def train_cmd(out: Path, iterations: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "comatch", "train", "--out", str(out), "--iterations", str(iterations), *TINY, *extra]


def one_line_error(capsys, *needles: str) -> str:
    """The stderr of a failed command: exactly one line, with every needle in it."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("comatch: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=False)["step"]


def metrics_steps(run: Path) -> list[tuple[str, int]]:
    text = (run / "metrics.jsonl").read_text()
    assert "\x00" not in text
    return [(r["kind"], r["step"]) for r in map(json.loads, text.splitlines())]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One tiny finished digits run (7 steps; checkpoints at 3, 6 and 7), made under umask 022."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    mask = os.umask(0o022)
    try:
        assert main(["train", "--out", str(out), "--iterations", "7", *TINY]) == 0
    finally:
        os.umask(mask)
    return out


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy of the finished run to damage."""
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


# ------------------------------------------------------------------ data loss or corruption
def test_resume_recovers_a_metrics_file_shorter_than_its_checkpoint(run, capsys):
    data = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_bytes(data[: len(data) // 2])  # a power cut: the end of a line lost
    kept = [json.loads(line) for line in data[: len(data) // 2].split(b"\n")[:-1]]
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--iterations", "9"]) == 0
    assert "is shorter than its checkpoint expects" in capsys.readouterr().err
    steps = metrics_steps(run)
    assert steps == [(r["kind"], r["step"]) for r in kept] + [("train", 8), ("train", 9), ("eval", 9)]


def test_resume_recovers_from_a_deleted_metrics_file(run, capsys):
    (run / "metrics.jsonl").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--iterations", "8"]) == 0
    assert "was missing: the metrics of steps 1-7 are lost" in capsys.readouterr().err
    assert metrics_steps(run) == [("train", 8), ("eval", 8)]


def test_a_second_process_on_a_run_refuses_with_one_line(run, capsys):
    with FileLock(run / ".lock", timeout=0):  # another process holds the run
        before = (run / "metrics.jsonl").read_bytes()
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--iterations", "9"]) == 2
        one_line_error(capsys, f"{run} is in use by another comatch process")
        assert (run / "metrics.jsonl").read_bytes() == before
        assert not (run / "resumes.jsonl").exists()


def test_a_killed_process_does_not_leave_the_run_locked(run, capsys):
    holder = subprocess.Popen(  # holds the run's lock as `comatch train` does, then is killed
        [sys.executable, "-c", "import sys, time; from comatch.training.runtime import RunLock; "
         "held = RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert main(["train", "--resume", str(run), "--iterations", "8"]) == 2
    one_line_error(capsys, f"(pid {holder.pid})")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert main(["train", "--resume", str(run), "--iterations", "8"]) == 0


def test_resuming_a_finished_run_keeps_an_older_fallback(run):
    folder = run / "checkpoints"
    assert (step_of(folder / "last.pt"), step_of(folder / "previous.pt")) == (7, 6)
    assert main(["train", "--resume", str(run)]) == 0
    assert (step_of(folder / "last.pt"), step_of(folder / "previous.pt")) == (7, 6)


def test_rotation_never_pushes_out_the_fallback(run):
    folder = run / "checkpoints"
    state = torch.load(folder / "last.pt", weights_only=False)
    save_rotating(folder, state)  # a stop right after a periodic checkpoint: the same state again
    assert (step_of(folder / "last.pt"), step_of(folder / "previous.pt")) == (7, 6)
    data = (folder / "last.pt").read_bytes()
    (folder / "last.pt").write_bytes(data[: len(data) // 2])  # damaged: the resume used previous.pt
    save_rotating(folder, {**state, "step": 8})
    assert (step_of(folder / "last.pt"), step_of(folder / "previous.pt")) == (8, 6)  # the damaged file is not kept
    save_rotating(folder, {**state, "step": 9})
    assert (step_of(folder / "last.pt"), step_of(folder / "previous.pt")) == (9, 8)


def test_images_that_vanish_during_training_are_counted_and_listed(tmp_path, capsys):
    from comatch.training.trainer import Trainer

    write_class_folder(tmp_path / "lab", ["a", "b"], 4, size=(32, 32))
    config = cfg.build_config(preset="folder", overrides=[
        f"data.labeled={tmp_path / 'lab'}", "data.labels_per_class=2", "optim.iterations=3", *FOLDER_TINY])
    trainer = Trainer(config, tmp_path / "run")
    gone = sorted(trainer.data.labelled.paths)[:2]
    for path in gone:
        os.unlink(path)
    capsys.readouterr()
    summary = trainer.fit()
    assert summary["skipped_images"] == 2
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert sorted(data["skipped"]) == gone and data["failed_during_training"] == 2
    err = capsys.readouterr().err
    assert "Warning" not in err and "skipping" not in err


# ------------------------------------------------------------------ one line and exit 2, not a traceback
def test_a_full_disk_while_checkpointing_is_one_line(run):
    import resource

    folder = run / "checkpoints"
    state = torch.load(folder / "last.pt", weights_only=False)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, limits[1]))  # `ulimit -f`: torch.save fails mid-file
    try:
        with pytest.raises(UserError, match=r"no space left for a checkpoint in .*File too large.*previous checkpoint is intact"):
            save_rotating(folder, {**state, "step": 8})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_an_unknown_architecture_is_refused_before_any_data_loads(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "model.arch=nonexistent", *TINY]) == 2
    one_line_error(capsys, "model.arch", "digits_cnn, wrn28_2", "resnet50")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["file", "under_file", "read_only"])
def test_an_unwritable_out_is_refused_before_any_data_loads(tmp_path, capsys, where):
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under_file": tmp_path / "f" / "run", "read_only": Path("/proc/comatch-run")}[where]
    assert main(["train", "--out", str(out), "--iterations", "2", *TINY]) == 2
    one_line_error(capsys, f"cannot write the run directory {out}", "choose another --out")


def test_a_binary_config_file_is_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_bytes(bytes(range(256)))
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--show-config"]) == 2
    one_line_error(capsys, "is not a text (YAML) file")


def test_a_labelled_list_that_is_an_image_or_another_runs_list_is_one_line(tmp_path, capsys):
    save_image(tmp_path / "x.png", torch.zeros(4, 4, 3, dtype=torch.uint8).numpy())
    assert main(["train", "--labeled-list", str(tmp_path / "x.png"), "--out", str(tmp_path / "a"), *TINY]) == 2
    one_line_error(capsys, "is not a text file")
    (tmp_path / "paths.json").write_text(json.dumps(["cat/1.png", "dog/2.png"]))  # a folder run's list
    assert main(["train", "--labeled-list", str(tmp_path / "paths.json"), "--out", str(tmp_path / "b"), *TINY]) == 2
    one_line_error(capsys, "names image paths", "images are numbered")


def test_resume_without_labelled_json_is_one_line(run, capsys):
    (run / "labelled.json").unlink()
    assert main(["train", "--resume", str(run)]) == 2
    one_line_error(capsys, "lacks labelled.json")


def test_report_copes_with_an_empty_or_truncated_metrics_file(run, capsys):
    data = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_bytes(data[:-20])  # SIGKILL mid-line
    assert main(["report", str(run), "--device", "cpu"]) == 0
    assert "1 damaged or incomplete line(s) left out" in capsys.readouterr().err
    (run / "metrics.jsonl").write_bytes(b"")
    assert main(["report", str(run), "--device", "cpu"]) == 0
    assert "holds no records yet" in capsys.readouterr().err


def test_export_and_predict_outputs_that_cannot_be_written_are_one_line(finished, tmp_path, capsys):
    assert main(["export", str(finished), "--format", "torchscript", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, f"--out {tmp_path} is a folder", "model.pt")
    assert main(["export", str(finished), "--format", "torchscript", "--out", "/proc/comatch.pt"]) == 2
    one_line_error(capsys, "cannot write --out /proc/comatch.pt")
    save_image(tmp_path / "x.png", torch.zeros(8, 8, 3, dtype=torch.uint8).numpy())
    assert main(["predict", str(finished), str(tmp_path / "x.png"), "--out", str(tmp_path)]) == 2
    one_line_error(capsys, f"--out {tmp_path} is a folder", "predictions.csv")


# ------------------------------------------------------------------ unclear or silent
@pytest.mark.parametrize("override,needle", [("optim.lr=inf", "optim.lr: Input should be a finite number"),
                                             ("data.std=[0]", "data.std: every value must be a finite number above 0")])
def test_impossible_values_fail_validation(capsys, override, needle):
    assert main(["train", "--show-config", override]) == 2
    one_line_error(capsys, needle)


def test_a_setting_of_another_method_is_refused(capsys):
    """FixMatch reads its own section, so comatch.alpha would silently change nothing."""
    assert main(["train", "--show-config", "--method", "fixmatch", "comatch.alpha=0.5"]) == 2
    one_line_error(capsys, "comatch.alpha does not apply to method fixmatch (it reads the fixmatch section); "
                           "drop it, or train with --method comatch")


def test_divergence_before_the_first_checkpoint_claims_no_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--iterations", "7", *TINY, "optim.lr=1e30", "run.nonfinite=stop"]) == 1
    err = one_line_error(capsys, "before the first checkpoint", "lower optim.lr")
    assert "intact" not in err and "--resume" not in err


class SignalNotHandled(Exception):
    """What SIGTERM raises in a test when `comatch train` installed no handler of its own."""


@pytest.fixture
def sigterm_guard():
    """Turn an unhandled SIGTERM into an exception (not the end of pytest); restore afterwards."""
    def unhandled(signum, frame):
        raise SignalNotHandled

    previous = signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_while_the_data_loads_leaves_a_resumable_run(tmp_path, capsys, monkeypatch, sigterm_guard):
    from comatch.training.trainer import Trainer

    out = tmp_path / "run"
    build = Trainer.__init__

    def signalled(self, *args, **kwargs):  # the signal arrives while the trainer loads the data
        os.kill(os.getpid(), signal.SIGTERM)
        build(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "__init__", signalled)
        assert main(["train", "--out", str(out), "--iterations", "2", *TINY]) == 143  # stopped by SIGTERM
    assert f"stopped at step 0 of 2; checkpoint saved. Continue with: comatch train --resume {out}" in capsys.readouterr().out
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["step"] == 0
    assert main(["train", "--resume", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["iterations"] == 2


def test_sigterm_just_before_the_training_loop_leaves_a_resumable_run(tmp_path, capsys, monkeypatch, sigterm_guard):
    from comatch.training import parallel

    out = tmp_path / "run"
    real = parallel.run_monitor

    def signalled(*args, **kwargs):  # config.yaml and friends are written, the loop not yet entered
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr("comatch.training.parallel.run_monitor", signalled)
        assert main(["train", "--out", str(out), "--iterations", "2", *TINY]) == 143  # stopped by SIGTERM
    assert "Continue with: comatch train --resume" in capsys.readouterr().out
    assert main(["train", "--resume", str(out)]) == 0


def test_sigterm_during_the_end_of_run_report_says_how_to_rebuild_it(tmp_path, capsys, monkeypatch, sigterm_guard):
    out = tmp_path / "run"
    monkeypatch.setattr("comatch.tools.report.build.end_of_run_report", lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    assert main(["train", "--out", str(out), "--iterations", "2", *TINY, "run.report=true"]) == 0
    assert (f"the end-of-run report was not written (stopped by SIGTERM); the run is complete and saved in {out}: "
            f"`comatch report {out}` writes the report") in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["stopped"] is False


def test_predict_on_only_a_missing_path_fails(finished, tmp_path, capsys):
    assert main(["predict", str(finished), str(tmp_path / "nothing.png")]) == 2
    one_line_error(capsys, "nothing.png does not exist")


def test_a_damaged_checkpoint_for_evaluate_does_not_speak_of_resuming(run, capsys):
    for name in ("last.pt", "previous.pt"):
        (run / "checkpoints" / name).write_bytes(b"damaged")
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "no model to load" in err[-1] and "resume" not in err[-1]


def test_a_file_given_as_labelled_folder_says_so(tmp_path, capsys):
    (tmp_path / "f.png").write_bytes(b"x")
    assert main(["train", "--labeled", str(tmp_path / "f.png"), "--out", str(tmp_path / "r"), *FOLDER_TINY]) == 2
    one_line_error(capsys, "is a file, not a folder")


def test_a_single_class_or_test_equal_to_labelled_warns(tmp_path):
    write_class_folder(tmp_path / "one", ["a"], 6, size=(8, 8))
    single = build_data("folder", seed=0, labels_per_class=2, labeled=str(tmp_path / "one"), image_size=8, channels=3)
    assert any("single class ('a')" in n and n.startswith("warning:") for n in single.notes)
    write_class_folder(tmp_path / "two", ["a", "b"], 6, size=(8, 8))
    same = build_data("folder", seed=0, labels_per_class=2, labeled=str(tmp_path / "two"),
                      test=str(tmp_path / "two"), image_size=8, channels=3)
    assert any("the test folder is the labelled folder" in n for n in same.notes)


def test_files_respect_the_umask(finished, tmp_path):
    for name in ("config.yaml", "summary.json", "labelled.json", "data.json", "metrics.jsonl",
                 "checkpoints/last.pt", "checkpoints/previous.pt"):
        assert (finished / name).stat().st_mode & 0o777 == 0o644, name
    mask = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "x.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o640


# ------------------------------------------------------------------ the Python API checks its input
def test_pseudo_label_loss_refuses_what_it_cannot_mean():
    logits = torch.randn(8, 3)
    with pytest.raises(ValueError, match=r"targets must be probabilities \[N, C\] = \[8, 3\].*got shape \[1, 3\]"):
        pseudo_label_loss(logits, torch.full((1, 3), 1 / 3), 0.9)
    with pytest.raises(TypeError, match=r"targets must be floating point.*torch.int64.*one_hot"):
        pseudo_label_loss(logits, torch.zeros(8, 3, dtype=torch.long), 0.9)
    with pytest.raises(ValueError, match=r"targets must be 2-D"):
        pseudo_label_loss(logits, torch.zeros(8, dtype=torch.long).float(), 0.9)
    with pytest.raises(ValueError, match="empty batch"):
        pseudo_label_loss(torch.zeros(0, 3), torch.zeros(0, 3), 0.9)
    with pytest.raises(ValueError, match="threshold must be a number"):
        pseudo_label_loss(logits, torch.full((8, 3), 1 / 3), float("nan"))


def test_the_graph_and_smoothing_functions_refuse_bad_shapes_and_temperatures():
    z = torch.nn.functional.normalize(torch.randn(4, 5), dim=1)
    graph = torch.eye(4)
    with pytest.raises(ValueError, match=r"temperature must be a finite number above 0.*got 0"):
        contrastive_graph_loss(z, z, graph, 0)
    with pytest.raises(ValueError, match="empty batch"):
        contrastive_graph_loss(z[:0], z[:0], graph[:0, :0], 0.2)
    with pytest.raises(ValueError, match=r"target_graph must be the target graph \[N, M\] = \[4, 4\]"):
        contrastive_graph_loss(z, z, torch.eye(3), 0.2)
    with pytest.raises(ValueError, match=r"z1 must be embeddings \[M, D\] with D = 5"):
        contrastive_graph_loss(z, z[:, :3], graph, 0.2)
    probs = torch.softmax(torch.randn(4, 3), dim=1)
    with pytest.raises(ValueError, match="temperature must be a finite number above 0"):
        memory_smoothed_labels(probs, z, z, probs, 0.9, 0.0)
    with pytest.raises(ValueError, match=r"bank_probs must be bank probabilities \[K, C\] with K = 4, C = 3"):
        memory_smoothed_labels(probs, z, z, probs[:, :2], 0.9, 0.2)
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0.0, 1.0\]"):
        memory_smoothed_labels(probs, z, z, probs, 1.5, 0.2)
    with pytest.raises(ValueError, match=r"queue_probs must be queued pseudo-labels \[K, C\] with C = 3"):
        pseudo_label_graph(probs, 0.8, torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"mean_probs must be the mean class distribution \[C\] = \[3\], got \[4\]"):
        distribution_alignment(probs, torch.full((4,), 0.25))
