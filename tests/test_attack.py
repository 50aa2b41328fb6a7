"""The attack of issue 26 ("Never lose a run, part 3"), kept as probes: folders from a real disk
(symbolic links, hidden files, odd image types, the same image in two roles), files a run reads
back (calibration.json, outliers.json), and the messages of commands that fail. Each test
reproduces one defect; the slow ones (a real training run) are marked ``slow``."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comatch.cli import main
from test_hostile import one_line_error  # the one-line error check of the earlier probes
from comatch.data import build_data
from comatch.data.folders import scan_class_folder
from comatch.data.scan import IMAGE_EXTENSIONS, find_images
from comatch.errors import UserError
from datafiles import save_image, write_class_folder

FOLDER_TINY = ["optim.batch_size=2", "optim.mu=1", "data.num_workers=0", "run.eval_every=2", "run.log_every=1",
               "model.arch=wrn10_1", "data.image_size=16", "run.tensorboard=false", "run.report=false"]


def folder_data(labeled: Path, unlabeled: Path | None = None, test: Path | None = None, **kw):
    """build_data of the user's folders at 8 px, one labelled image per class."""
    return build_data("folder", seed=0, labels_per_class=1, labeled=str(labeled),
                      unlabeled=None if unlabeled is None else str(unlabeled),
                      test=None if test is None else str(test), image_size=8, channels=3, **kw)


@pytest.fixture
def hostile_labelled(tmp_path) -> Path:
    """``L/c0``, ``L/c1`` with 5 PNGs each, plus what a real disk adds: a link to the folder itself
    (``c2 -> L``), a link to the current folder (``c1/again -> .``), a hidden folder with an image,
    macOS ``._x.png`` and ``.DS_Store`` files."""
    root = tmp_path / "L"
    write_class_folder(root, ["c0", "c1"], 5, size=(8, 8))
    os.symlink(root, root / "c2")
    os.symlink(".", root / "c1" / "again")
    save_image(root / ".ipynb_checkpoints" / "x.png", np.zeros((8, 8, 3), np.uint8))
    (root / "c0" / "._c0_0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "c0" / ".DS_Store").write_bytes(b"Bud1")
    return root


# ------------------------------------------------------------------ 1, 2: links and hidden files
def test_a_link_loop_and_hidden_files_leave_exactly_the_real_images_and_classes(hostile_labelled):
    data = folder_data(hostile_labelled, test=None)
    assert data.class_names == ["c0", "c1"]
    assert len(data.unlabelled) + len(data.test) == 10  # 8 in the pool + 2 held out, nothing copied
    keys = [data.unlabelled.paths[i] for i in range(len(data.unlabelled))] + data.test.paths
    assert sorted(Path(k).relative_to(hostile_labelled).as_posix() for k in keys) == \
        [f"c{c}/c{c}_{i}.png" for c in range(2) for i in range(5)]  # no c2/c2/... or c1/again/... entries
    ignored = sorted(Path(p).relative_to(hostile_labelled).as_posix() for p in data.ignored)
    assert ignored == [".ipynb_checkpoints", "c0/.DS_Store", "c0/._c0_0.png", "c1/again", "c2"]
    assert data.skipped == []  # the AppleDouble file is not an unreadable image: it is not looked at
    note = [n for n in data.notes if "skipped" in n and "hidden" in n]
    assert len(note) == 1 and "3 hidden file(s) or folder(s), 2 link loop(s)" in note[0], data.notes
    assert data.describe()["ignored_files"] == 5


def test_a_link_loop_inside_a_class_is_not_followed(tmp_path):
    write_class_folder(tmp_path / "L", ["a", "b"], 4, size=(8, 8))
    os.symlink("..", tmp_path / "L" / "b" / "up")  # b/up -> L: the whole folder again, under b
    data = folder_data(tmp_path / "L")
    counts = np.bincount(data.unlabelled.labels.tolist() + data.test.labels.tolist())
    assert counts.tolist() == [4, 4]


def test_a_file_reached_twice_through_links_is_one_image(tmp_path):
    write_class_folder(tmp_path / "L", ["a", "b"], 3, size=(8, 8))
    (tmp_path / "L" / "a" / "more").mkdir()
    os.symlink(tmp_path / "L" / "a" / "a_0.png", tmp_path / "L" / "a" / "more" / "same.png")
    outside = tmp_path / "outside"
    write_class_folder(outside, ["x"], 2, size=(8, 8))
    os.symlink(outside / "x", tmp_path / "L" / "b" / "linked")  # followed: images outside, once
    os.symlink(outside / "x", tmp_path / "L" / "b" / "linked_again")
    scan = find_images(tmp_path / "L")
    names = [Path(p).relative_to(tmp_path / "L").as_posix() for p in scan.files]
    assert names == ["a/a_0.png", "a/a_1.png", "a/a_2.png", "b/b_0.png", "b/b_1.png", "b/b_2.png",
                     "b/linked/x_0.png", "b/linked/x_1.png"]
    assert sorted(Path(p).name for p in scan.repeats) == ["linked_again", "same.png"]


def test_a_hidden_class_folder_is_not_a_class_and_a_wider_test_folder_is_refused(tmp_path):
    write_class_folder(tmp_path / "L", ["a", "b"], 4, size=(8, 8))
    save_image(tmp_path / "L" / ".ipynb_checkpoints" / "a.png", np.zeros((8, 8, 3), np.uint8))
    save_image(tmp_path / "L" / "__MACOSX" / "b" / "._b.png", np.zeros((8, 8, 3), np.uint8))
    write_class_folder(tmp_path / "T", ["a", "b", "c"], 1, size=(8, 8), seed=1)
    assert folder_data(tmp_path / "L").class_names == ["a", "b"]
    with pytest.raises(UserError, match="test folder .* has class 'c', which the labelled data lacks"):
        folder_data(tmp_path / "L", test=tmp_path / "T")


@pytest.mark.slow
def test_training_on_a_hostile_folder_trains_on_its_real_images(hostile_labelled, tmp_path, capsys):
    unlabelled = tmp_path / "U"
    write_class_folder(unlabelled, ["u"], 6, size=(8, 8), seed=3)
    out = tmp_path / "run"
    assert main(["train", "--labeled", str(hostile_labelled), "--unlabeled", str(unlabelled), "--iterations", "2",
                 "--out", str(out), *FOLDER_TINY]) == 0
    labelled = json.loads((out / "labelled.json").read_text())
    assert len(labelled) == 8 and all(k.count("/") == 1 and k.startswith(("c0/c0_", "c1/c1_")) for k in labelled)
    described = json.loads((out / "data.json").read_text())
    assert described["classes"] == ["c0", "c1"] and described["ignored_files"] == 5
    assert "labelled 8, unlabelled 14, val none, test 2; 2 classes" in capsys.readouterr().out


# ------------------------------------------------------------------ 7: the same image in two roles
def pool_names(dataset) -> list[str]:
    return [Path(p).name for p in dataset.paths]


def test_test_images_in_the_unlabelled_folder_are_not_trained_on(tmp_path):
    write_class_folder(tmp_path / "L", ["a", "b"], 3, size=(8, 8))
    write_class_folder(tmp_path / "T", ["a", "b"], 2, size=(8, 8), seed=1)
    data = folder_data(tmp_path / "L", unlabeled=tmp_path / "T", test=tmp_path / "T")
    assert len(data.test) == 4 and len(data.unlabelled) == 6  # the labelled pool only
    assert not set(data.test.paths) & set(data.unlabelled.paths)
    warning = [n for n in data.notes if n.startswith("warning: the same image")]
    assert len(warning) == 1 and "unlabelled and test 4" in warning[0], data.notes
    assert data.describe()["overlaps"]["counts"] == {"unlabelled+test": 4}


def test_copies_of_labelled_and_test_images_under_other_names_are_counted_once(tmp_path):
    labelled = write_class_folder(tmp_path / "L", ["a", "b"], 5, size=(8, 8))
    test = write_class_folder(tmp_path / "T", ["a", "b"], 2, size=(8, 8), seed=1)
    write_class_folder(tmp_path / "U", ["own"], 6, size=(8, 8), seed=2)
    for i, path in enumerate(labelled[:3] + test[:1]):  # same bytes, other names
        shutil.copy(path, tmp_path / "U" / f"copy_{i}.png")
    data = folder_data(tmp_path / "L", unlabeled=tmp_path / "U", test=tmp_path / "T")
    assert len(data.unlabelled) == 10 + 6  # the labelled pool once, plus the 6 images of U's own
    assert sorted(pool_names(data.unlabelled))[:4] == ["a_0.png", "a_1.png", "a_2.png", "a_3.png"]
    assert not any(name.startswith("copy_") for name in pool_names(data.unlabelled))
    counts = data.describe()["overlaps"]["counts"]
    assert counts == {"labelled+unlabelled": 3, "unlabelled+test": 1}
    assert sum(n.startswith("warning: the same image") for n in data.notes) == 1


def test_the_labelled_folder_as_unlabelled_keeps_the_held_out_test_images_out(tmp_path):
    write_class_folder(tmp_path / "L", ["a", "b"], 5, size=(8, 8))
    data = folder_data(tmp_path / "L", unlabeled=tmp_path / "L")
    assert len(data.test) == 2 and len(data.unlabelled) == 8
    assert not set(map(os.path.realpath, data.test.paths)) & set(map(os.path.realpath, data.unlabelled.paths))


def test_folders_without_overlap_keep_their_pools_and_order(tmp_path):
    write_class_folder(tmp_path / "L", ["a", "b"], 4, size=(8, 8))
    write_class_folder(tmp_path / "U", ["x", "y"], 3, size=(8, 8), seed=5)
    data = folder_data(tmp_path / "L", unlabeled=tmp_path / "U")
    assert "overlaps" not in data.describe() and not any("same image" in n for n in data.notes)
    assert pool_names(data.unlabelled)[-6:] == ["x_0.png", "x_1.png", "x_2.png", "y_0.png", "y_1.png", "y_2.png"]
    assert len(data.unlabelled) == 6 + 6


@pytest.mark.slow
def test_training_with_the_test_folder_as_unlabelled_warns_on_stderr_and_never_trains_on_it(tmp_path, capsys):
    write_class_folder(tmp_path / "L", ["a", "b"], 4, size=(8, 8))
    write_class_folder(tmp_path / "T", ["a", "b"], 2, size=(8, 8), seed=1)
    out = tmp_path / "run"
    assert main(["train", "--labeled", str(tmp_path / "L"), "--unlabeled", str(tmp_path / "T"), "--test",
                 str(tmp_path / "T"), "--num-labels", "2", "--iterations", "2", "--out", str(out), *FOLDER_TINY]) == 0
    captured = capsys.readouterr()
    assert "labelled 2, unlabelled 8, val none, test 4; 2 classes" in captured.out
    assert "warning" not in captured.out
    warnings = [line for line in captured.err.splitlines() if line.startswith("comatch: warning: the same image")]
    assert len(warnings) == 1 and "unlabelled and test 4" in warnings[0], captured.err
    assert json.loads((out / "data.json").read_text())["overlaps"]["counts"] == {"unlabelled+test": 4}


# ------------------------------------------------------------------ a finished run to read back
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-step run of two classes of 8 px images (with a validation part), and its folders."""
    base = tmp_path_factory.mktemp("attack")
    write_class_folder(base / "L", ["a", "b"], 4, size=(8, 8))
    write_class_folder(base / "U", ["u"], 6, size=(8, 8), seed=2)
    write_class_folder(base / "V", ["a", "b"], 2, size=(8, 8), seed=3)
    assert main(["train", "--labeled", str(base / "L"), "--unlabeled", str(base / "U"), "--val", str(base / "V"),
                 "--iterations", "2", "--out", str(base / "run"), *FOLDER_TINY]) == 0
    return base


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run to damage."""
    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def predicted(capsys, run: Path, *paths: Path) -> tuple[list[list[str]], str]:
    """``comatch predict RUN PATHS`` rows (header dropped) and stderr."""
    assert main(["predict", str(run), *map(str, paths), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    return [line.split(",") for line in captured.out.splitlines()[1:]], captured.err


# ------------------------------------------------------------------ 4: calibration.json
def test_a_temperature_outside_the_fitting_range_is_clamped_with_a_warning(run, trained, capsys):
    (run / "calibration.json").write_text(json.dumps({"temperature": 0.05}))
    edge, _ = predicted(capsys, run, trained / "V")
    (run / "calibration.json").write_text(json.dumps({"temperature": 1e-30}))
    rows, err = predicted(capsys, run, trained / "V")
    assert rows == edge and len(rows) == 4
    assert err.count("comatch: warning:") == 1 and "temperature 1e-30 lies outside" in err and "using 0.05" in err


@pytest.mark.parametrize("content", ['{"temperature": "hot"}', '{"temperature": null}', '{"temperature": NaN}',
                                     '{"temperature": 0}', '{"temper', '[1.5]'])
def test_a_damaged_calibration_file_stops_predict_with_one_line(run, trained, capsys, content):
    (run / "calibration.json").write_text(content)
    assert main(["predict", str(run), str(trained / "V"), "--device", "cpu"]) == 2
    one_line_error(capsys, str(run / "calibration.json"), f"comatch calibrate {run}")


@pytest.mark.parametrize("command", [["evaluate", "{run}", "--device", "cpu"], ["export", "{run}", "--format",
                                     "torchscript", "--out", "{run}/m.pt"], ["report", "{run}", "--device", "cpu"],
                                     ["suggest", "{run}", "--n", "2", "--device", "cpu"]])
def test_a_damaged_calibration_file_stops_every_command_that_reads_it(run, capsys, command):
    (run / "calibration.json").write_text('{"temperature": "hot"}')
    assert main([part.format(run=run) for part in command]) == 2
    one_line_error(capsys, "calibration.json is damaged (temperature \"hot\" is not a positive number)")


# ------------------------------------------------------------------ 5: image types, hidden files in predict
def test_predict_reads_every_image_type_training_reads_and_counts_what_it_skips(run, tmp_path, capsys):
    folder = tmp_path / "mixed"
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.ppm", "d.PNG", "e.pgm", "f.webp"):
        save_image(folder / name, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                   mode="L" if name.endswith(".pgm") else "RGB")
    frames = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(folder / "c.gif", save_all=True, append_images=frames[1:], duration=50)  # animated
    (folder / "._d.PNG").write_bytes(b"\x00\x05\x16\x07")
    (folder / ".DS_Store").write_bytes(b"Bud1")
    save_image(folder / ".thumbs" / "t.png", np.zeros((8, 8, 3), np.uint8))
    rows, err = predicted(capsys, run, folder)
    assert [Path(r[0]).name for r in rows] == ["a.tif", "b.ppm", "c.gif", "d.PNG", "e.pgm", "f.webp"]
    assert all(r[-1] == "" for r in rows), rows  # no errors: the GIF is read as its first frame
    assert "predicted 6 image(s); 0 could not be read" in err
    assert "comatch: note: skipped 3 hidden file(s) or folder(s)" in err and "._d.PNG" in err
    assert {".gif", ".tif", ".ppm", ".pgm"} <= set(IMAGE_EXTENSIONS)


def test_an_animated_gif_is_in_the_training_pool_as_its_first_frame(tmp_path):
    write_class_folder(tmp_path / "L", ["a", "b"], 3, size=(8, 8))
    first = np.full((8, 8, 3), 200, np.uint8)
    frames = [Image.fromarray(first), Image.fromarray(np.zeros((8, 8, 3), np.uint8))]
    frames[0].save(tmp_path / "L" / "a" / "moving.gif", save_all=True, append_images=frames[1:], duration=50)
    data = folder_data(tmp_path / "L", test=None)
    assert len(data.unlabelled) + len(data.test) == 7
    part = data.unlabelled if any(p.endswith("moving.gif") for p in data.unlabelled.paths) else data.test
    image, _ = part[[Path(p).name for p in part.paths].index("moving.gif")]
    assert abs(int(image.float().mean()) - 200) <= 2  # the first frame, not the black second one


def test_evaluate_on_a_test_folder_skips_hidden_folders_and_says_so(run, trained, tmp_path, capsys):
    shutil.copytree(trained / "V", tmp_path / "T")
    save_image(tmp_path / "T" / ".ipynb_checkpoints" / "x.png", np.zeros((8, 8, 3), np.uint8))
    save_image(tmp_path / "T" / "a" / ".hidden.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["evaluate", str(run), "--test", str(tmp_path / "T"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_images"] == 4
    assert "comatch: note: skipped 2 hidden file(s) or folder(s)" in captured.err


# ------------------------------------------------------------------ 6: suggest --links, one round per folder
def test_suggest_links_hold_only_the_latest_round(run, tmp_path, capsys):
    links = tmp_path / "to-label"
    save_image(links / "mine" / "keep.png", np.zeros((8, 8, 3), np.uint8))  # the user's own file
    assert main(["suggest", str(run), "--n", "5", "--links", str(links), "--device", "cpu"]) == 0
    assert main(["suggest", str(run), "--n", "2", "--links", str(links), "--device", "cpu"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 5 + 1 + 2 + 1  # two CSVs with their headers
    found = sorted(p.relative_to(links).as_posix() for p in links.rglob("*") if p.is_symlink())
    assert [name.split("/")[1][:5] for name in found] == ["0001_", "0002_"], found
    assert (links / "mine" / "keep.png").is_file()
    assert len(find_images(links).files) == 3  # keep.png and the two links: the record file is hidden


def test_suggest_checks_its_out_file_before_ranking(run, tmp_path, capsys, monkeypatch):
    import comatch.tools.trust.suggest as suggest_module

    monkeypatch.setattr(suggest_module, "suggest", lambda *a, **k: pytest.fail("ranked before checking --out"))
    assert main(["suggest", str(run), "--n", "2", "--out", str(tmp_path), "--device", "cpu"]) == 2
    one_line_error(capsys, f"--out {tmp_path} is a folder")


# ------------------------------------------------------------------ 11, 13: messages
def test_baseline_with_a_negative_unlabelled_count_is_one_line(run, capsys):
    assert main(["baseline", str(run), "--max-unlabelled", "-5"]) == 2
    one_line_error(capsys, "--max-unlabeled: must be at least 0, got -5")


def test_baseline_and_report_keep_library_warnings_off_stderr(run, capsys):
    assert main(["baseline", str(run), "--max-unlabelled", "0"]) == 0
    assert main(["report", str(run), "--device", "cpu", "--embedding", "tsne"]) == 0
    err = capsys.readouterr().err
    assert "Warning" not in err and "warn(" not in err, err


def test_a_union_config_field_names_its_key_not_a_type(capsys):
    assert main(["train", "comatch.da_prior=skewed", "--show-config"]) == 2
    err = one_line_error(capsys, "for comatch.da_prior: Input should be 'uniform' or 'labelled', or a valid list")
    assert "literal" not in err


def test_a_dangling_out_link_is_named_as_such(tmp_path, capsys):
    os.symlink(tmp_path / "gone", tmp_path / "out")
    assert main(["train", "--out", str(tmp_path / "out"), "--iterations", "2", "run.tensorboard=false"]) == 2
    one_line_error(capsys, f"it is a link to {tmp_path / 'gone'}, which does not exist")


# ------------------------------------------------------------------ 12: after a full disk, say what to do with R
@pytest.mark.slow
def test_a_full_disk_before_the_first_checkpoint_leaves_a_directory_the_same_command_can_use(tmp_path, capsys):
    import resource

    command = ["train", "--out", str(tmp_path / "run"), "--iterations", "4", "run.checkpoint_every=2",
               "data.num_workers=0", "optim.batch_size=4", "optim.mu=2", "run.tensorboard=false", "run.report=false"]
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, limits[1]))  # `ulimit -f`: the checkpoint does not fit
    try:
        assert main(command) == 2
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    one_line_error(capsys, "no checkpoint was saved yet: free some space and run the same command again")
    assert main(command) == 0
    assert "done:" in capsys.readouterr().out


# ------------------------------------------------------------------ part 4: outliers.json read back
@pytest.mark.parametrize("content, needle", [("{\"rows\": [1, 2", "is damaged (not a JSON object"),
                                             ("{\"rows\": [\"x\"]}", "rows are not whole numbers"),
                                             ("{\"rows\": [3, 99]}", "rows outside the 10 unlabelled images"),
                                             ("{\"rows\": [3, 3]}", "names one twice")])
def test_a_damaged_outliers_file_is_one_clear_error(tmp_path, content, needle):
    from comatch.tools.trust.ood import read_outliers

    (tmp_path / "outliers.json").write_text(content)
    with pytest.raises(UserError, match="delete it to score the unlabelled images again") as caught:
        read_outliers(tmp_path / "outliers.json", 10)
    assert needle in str(caught.value)
    (tmp_path / "outliers.json").write_text("{\"rows\": [7, 2]}")
    assert read_outliers(tmp_path / "outliers.json", 10).tolist() == [2, 7]


def test_suggest_and_baseline_say_what_the_runs_folders_left_out(run, trained, capsys):
    (trained / "U" / "u" / ".DS_Store").write_bytes(b"Bud1")
    try:
        assert main(["suggest", str(run), "--n", "1", "--device", "cpu"]) == 0
        assert main(["baseline", str(run), "--no-pixels"]) == 0
    finally:
        (trained / "U" / "u" / ".DS_Store").unlink()
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("comatch: note: the run's")]
    assert len(notes) == 2 and all("skipped 1 hidden file(s)" in n and ".DS_Store" in n for n in notes), notes


@pytest.mark.parametrize("content", ["{", "[]", "[null]", "[1.5]"])
def test_a_damaged_labelled_json_stops_a_resume_with_one_line(run, capsys, content):
    (run / "labelled.json").write_text(content)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    assert main(["train", "--resume", str(run), "--iterations", "4"]) == 2
    one_line_error(capsys, f"{run / 'labelled.json'} is damaged", "restore it from a backup")
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_a_pipe_named_like_an_image_is_skipped_not_read(tmp_path):
    write_class_folder(tmp_path / "L", ["a", "b"], 3, size=(8, 8))
    os.mkfifo(tmp_path / "L" / "a" / "stream.png")  # reading it would block forever
    os.symlink(tmp_path / "gone.png", tmp_path / "L" / "b" / "broken.png")
    data = folder_data(tmp_path / "L")
    assert [Path(p).name for p in data.ignored] == ["stream.png"]
    assert [Path(p).name for p in data.skipped] == ["broken.png"]  # a broken link is an unreadable image
    assert len(data.unlabelled) + len(data.test) == 6


def test_an_unlabelled_folder_of_only_copies_says_so(tmp_path):
    write_class_folder(tmp_path / "L", ["a", "b"], 3, size=(8, 8))
    write_class_folder(tmp_path / "T", ["a", "b"], 1, size=(8, 8), seed=1)
    with pytest.raises(UserError, match="the unlabelled folder holds only copies of labelled or test images"):
        build_data("folder", seed=0, labels_per_class=None, labeled=str(tmp_path / "L"), unlabeled=str(tmp_path / "T"),
                   test=str(tmp_path / "T"), image_size=8, channels=3)


def test_a_folder_named_calibration_json_is_one_line(run, trained, capsys):
    (run / "calibration.json").unlink()
    (run / "calibration.json").mkdir()
    assert main(["predict", str(run), str(trained / "V"), "--device", "cpu"]) == 2
    one_line_error(capsys, f"cannot read {run / 'calibration.json'}")


def test_a_training_runs_warnings_go_to_stderr_and_its_notes_to_the_progress_stream(tmp_path, capsys):
    import io

    from comatch.training.monitor import RunMonitor

    stream = io.StringIO()
    monitor = RunMonitor(tmp_path, total=10, stream=stream, tensorboard=False)
    monitor.message("warning: the test folder is the labelled folder")
    monitor.message("comatch: warning: the mask rate stayed below 2%")
    monitor.message("data: 3 classes")
    monitor.close()
    assert stream.getvalue() == "data: 3 classes\n"
    assert capsys.readouterr().err == ("comatch: warning: the test folder is the labelled folder\n"
                                       "comatch: warning: the mask rate stayed below 2%\n")


def test_a_link_from_one_class_into_another_keeps_each_image_in_its_own_class(tmp_path):
    write_class_folder(tmp_path / "L", ["a", "b"], 3, size=(8, 8))
    os.symlink(tmp_path / "L" / "b", tmp_path / "L" / "a" / "all_of_b")  # walked before b itself
    os.symlink(tmp_path / "L" / "b" / "b_0.png", tmp_path / "L" / "a" / "also.png")
    names, files, scan = scan_class_folder(tmp_path / "L", "labelled")
    assert names == ["a", "b"]
    assert [(Path(p).name, label) for p, label in zip(files.paths, files.labels)] == \
        [("a_0.png", 0), ("a_1.png", 0), ("a_2.png", 0), ("b_0.png", 1), ("b_1.png", 1), ("b_2.png", 1)]
    assert sorted(Path(p).name for p in scan.repeats) == ["all_of_b", "also.png"]
