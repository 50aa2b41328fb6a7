"""The decisions file of ``comatch label`` going back into training (``--extra-labels``)."""

from __future__ import annotations

import json

import pytest

from comatch.cli import main
from comatch.data.extra_labels import append_decision, read_decisions, read_rows
from comatch.data.sources import build_data
from datafiles import write_class_folder, write_user_tree

TINY = ["--iterations", "2", "optim.batch_size=2", "optim.mu=1", "data.num_workers=0", "run.eval_every=2",
        "run.log_every=1", "model.arch=wrn10_1", "data.image_size=32", "run.tensorboard=false", "run.report=false"]


def _decide(csv, rows):
    for path, label in rows:
        append_decision(csv, str(path), label, "2026-01-01T00:00:00Z")


def test_undo_rows_take_back_the_latest_decision_and_the_last_one_stands(tmp_path):
    csv = tmp_path / "labels.csv"
    _decide(csv, [("a.png", "cat"), ("b.png", "dog"), ("a.png", "fox"), ("a.png", "undo"), ("b.png", "undo"),
                  ("c.png", "exclude"), ("d.png", "undo")])
    assert csv.read_text().splitlines()[0] == "path,label,time"
    assert len(read_rows(csv)) == 7
    assert read_decisions(csv) == {"a.png": "cat", "c.png": "exclude"}


def _tree(tmp_path):
    tree = write_user_tree(tmp_path)
    files = sorted(str(p) for p in tree["unlabeled"].rglob("*.png"))
    return tree, files


def _folder(tree, csv, **kw):
    return build_data("folder", seed=0, labels_per_class=None, labeled=str(tree["labeled"]),
                      unlabeled=str(tree["unlabeled"]), test=str(tree["test"]), extra_labels=str(csv), **kw)


def test_decisions_move_files_into_the_labelled_set_and_out_of_the_pool(tmp_path):
    tree, files = _tree(tmp_path)
    plain = build_data("folder", seed=0, labels_per_class=None, labeled=str(tree["labeled"]),
                       unlabeled=str(tree["unlabeled"]), test=str(tree["test"]))
    csv = tmp_path / "labels.csv"
    relative = files[3][len(str(tree["unlabeled"])) + 1:]  # a path relative to the unlabelled folder works too
    _decide(csv, [(files[0], "dog"), (relative, "fox"), (files[5], "exclude"), (tmp_path / "gone.png", "cat")])
    data = _folder(tree, csv)
    assert len(data.labelled) == len(plain.labelled) + 2
    assert len(data.unlabelled) == len(plain.unlabelled) - 1  # the excluded file left; the labelled stay (pool keeps them)
    new = dict(zip(data.labelled.paths[-2:], data.labelled.labels[-2:].tolist()))
    assert new == {files[0]: 1, files[3]: 2}  # dog, fox
    assert files[5] not in data.unlabelled.paths
    assert "extra-labels:" + relative in data.labelled_ids[-2:]
    counts = data.describe()["extra_labels"]
    assert (counts["labelled"], counts["excluded"], counts["missing"]) == (2, 1, 1)
    assert counts["per_class"] == {"dog": 1, "fox": 1} and counts["missing_paths"] == [str(tmp_path / "gone.png")]
    assert any("1 decided path(s) are not among the unlabelled files" in n for n in data.notes)
    apart = _folder(tree, csv, unlabeled_includes_labeled=False)
    assert files[0] not in apart.unlabelled.paths and len(apart.labelled) == len(data.labelled)
    assert "extra_labels" not in plain.describe()  # a run without the file writes what it wrote before


def test_an_unknown_class_or_a_missing_file_is_one_line(tmp_path, capsys):
    tree, files = _tree(tmp_path)
    csv = tmp_path / "labels.csv"
    _decide(csv, [(files[0], "wolf")])
    args = ["train", "--labeled", str(tree["labeled"]), "--unlabeled", str(tree["unlabeled"]), "--test",
            str(tree["test"]), "--out", str(tmp_path / "run"), *TINY]
    assert main([*args, "--extra-labels", str(csv)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("comatch: error: ") and "'wolf', which is not a class of the run" in err
    assert len(err.splitlines()) == 1
    assert main([*args, "--extra-labels", str(tmp_path / "nope.csv")]) == 2
    assert "the extra labels file" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_benchmark_run_refuses_extra_labels(tmp_path):
    csv = tmp_path / "labels.csv"
    _decide(csv, [("x.png", "1")])
    with pytest.raises(Exception, match="is for your own folders"):
        build_data("digits", seed=0, labels_per_class=1, extra_labels=str(csv))


def test_train_counts_the_new_labels_in_data_json(tmp_path):
    write_class_folder(tmp_path / "lab", ["a", "b"], 4)
    write_class_folder(tmp_path / "pool", ["x"], 6, seed=3)
    files = sorted(str(p) for p in (tmp_path / "pool").rglob("*.png"))
    csv = tmp_path / "labels.csv"
    _decide(csv, [(files[0], "a"), (files[1], "b"), (files[2], "exclude")])
    out = tmp_path / "run"
    assert main(["train", "--labeled", str(tmp_path / "lab"), "--unlabeled", str(tmp_path / "pool"),
                 "--extra-labels", str(csv), "--out", str(out), *TINY]) == 0
    data = json.loads((out / "data.json").read_text())
    assert data["extra_labels"]["labelled"] == 2 and data["extra_labels"]["excluded"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_labelled"] == 6 + 2  # 4 per class less the 20% test hold-out, plus the two decided
    assert data["unlabelled"] == 6 + 6 - 1
    assert len(json.loads((out / "labelled.json").read_text())) == 8
