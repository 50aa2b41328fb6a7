"""Benchmark readers on tiny files in each publisher's format, and training on them via the CLI."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from comatch.cli import main
from comatch.data import build_data
from comatch.data.benchmarks import load_benchmark
from datafiles import write_cifar10, write_cifar100, write_imagenet, write_stl10, write_svhn

TINY = ["--iterations", "2", "optim.batch_size=2", "optim.mu=1", "data.num_workers=0", "run.eval_every=2",
        "run.log_every=1", "model.arch=wrn10_1", "data.image_size=32", "run.tensorboard=false"]


def test_cifar10_pixels_labels_and_class_names_are_read_exactly(tmp_path):
    written = write_cifar10(tmp_path)
    data = load_benchmark("cifar10", tmp_path)
    assert torch.equal(data.images, torch.from_numpy(written["train"].images))  # [20, 3, 32, 32]
    assert data.labels.tolist() == written["train"].labels.tolist() and data.num_pool == 20
    assert torch.equal(data.test_images, torch.from_numpy(written["test"].images))
    assert data.class_names[:2] == ["class0", "class1"]


def test_cifar100_uses_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    data = load_benchmark("cifar100", tmp_path)
    assert data.labels.tolist() == written["train"].labels.tolist() and len(data.class_names) == 100
    assert torch.equal(data.test_images, torch.from_numpy(written["test"].images))


def test_stl10_keeps_orientation_and_adds_unlabelled_images_with_label_minus_one(tmp_path):
    written = write_stl10(tmp_path)
    data = load_benchmark("stl10", tmp_path)
    assert data.num_pool == 20 and data.images.shape == (30, 3, 96, 96)
    assert torch.equal(data.images[:20], torch.from_numpy(written["train"].images))
    assert torch.equal(data.images[20:], torch.from_numpy(written["unlabeled"].images))
    assert data.labels[:20].tolist() == written["train"].labels.tolist()  # 1..10 on disk -> 0..9
    assert data.labels[20:].tolist() == [-1] * 10 and data.class_names[0] == "airplane"


def test_svhn_maps_label_10_to_digit_0_and_extra_joins_the_unlabelled_data(tmp_path):
    written = write_svhn(tmp_path, extra=6)
    plain = load_benchmark("svhn", tmp_path)
    assert torch.equal(plain.images, torch.from_numpy(written["train"].images))
    assert plain.labels.tolist() == written["train"].labels.tolist() and 0 in plain.labels.tolist()
    extra = load_benchmark("svhn", tmp_path, extra_unlabeled=True)
    assert extra.num_pool == 20 and len(extra.images) == 26
    assert torch.equal(extra.images[20:], torch.from_numpy(written["extra"].images))


def test_resize_and_grayscale_conversion_happen_once_in_memory(tmp_path):
    write_stl10(tmp_path)
    data = build_data("stl10", seed=0, labels_per_class=1, root=str(tmp_path), image_size=32, channels=1)
    image, label = data.unlabelled[25]
    assert image.shape == (1, 32, 32) and image.dtype == torch.uint8 and label == -1
    assert data.labelled_ids == sorted(data.labelled_ids) and max(data.labelled_ids) < 20
    assert len(data.labelled) == 10 and len(data.test) == 10 and len(data.mean) == 1


def _train(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data-root", str(tmp_path), *TINY, *args]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("preset, writer, extra", [
    ("cifar10-40", write_cifar10, ["--labels-per-class", "1"]),  # 2 of each class's 2 would leave no unlabelled image
    ("cifar100-400", write_cifar100, ["--labels-per-class", "1"]),
    ("stl10-1000", write_stl10, ["--labels-per-class", "1"]),
    ("svhn-40", lambda root: write_svhn(root, extra=4), ["--labels-per-class", "1", "data.extra_unlabeled=true"]),
])
def test_train_two_steps_on_each_benchmark(tmp_path, preset, writer, extra):
    writer(tmp_path)
    summary = _train(tmp_path, "--preset", preset, *extra)
    assert summary["iterations"] == 2 and 0.0 <= summary["test_accuracy"] <= 1.0
    labelled = json.loads((tmp_path / "run" / "labelled.json").read_text())
    assert all(isinstance(i, int) for i in labelled) and summary["num_labelled"] == len(labelled)


def test_evaluate_reads_the_benchmark_from_data_root(tmp_path, capsys):
    write_cifar10(tmp_path / "elsewhere")
    assert main(["train", "--out", str(tmp_path / "run"), "--data-root", str(tmp_path / "elsewhere"), *TINY,
                 "--preset", "cifar10-40", "--labels-per-class", "1", "run.report=false"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--data-root", str(tmp_path / "elsewhere")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(summary["test_accuracy_ema"])
    assert main(["evaluate", str(tmp_path / "run"), "--data-root", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_train_on_an_imagenet_style_folder(tmp_path):
    write_imagenet(tmp_path / "imagenet")
    summary = _train(tmp_path, "--preset", "imagenet-1pct", "--labels-per-class", "2", "model.arch=wrn10_1",
                     "comatch.bank_size=64")
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    # the preset's pool leaves the labelled images out, as the released code does: 18 - 6
    assert data["test"] == 6 and data["unlabelled"] == 12 and data["labelled"] == 6
    labelled = json.loads((tmp_path / "run" / "labelled.json").read_text())
    assert labelled[0].startswith("n00000000/") and summary["skipped_images"] == 0


def _error(capsys, *args: str) -> str:
    assert main(["train", "data.num_workers=0", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("comatch: error:") and "\n" not in err
    return err


def test_missing_data_root_names_it_and_the_source(tmp_path, capsys):
    err = _error(capsys, "--preset", "cifar10-40", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert str(tmp_path / "nowhere") in err and "https://www.cs.toronto.edu/~kriz/cifar.html" in err
    assert not (tmp_path / "r" / "summary.json").exists()


@pytest.mark.parametrize("writer, preset, missing", [
    (write_cifar10, "cifar10-40", "cifar-10-batches-py/test_batch"),
    (write_cifar100, "cifar100-400", "cifar-100-python/meta"),
    (write_stl10, "stl10-1000", "stl10_binary/unlabeled_X.bin"),
    (write_svhn, "svhn-40", "test_32x32.mat"),
])
def test_missing_split_file_is_named(tmp_path, capsys, writer, preset, missing):
    writer(tmp_path)
    (tmp_path / missing).unlink()
    err = _error(capsys, "--preset", preset, "--data-root", str(tmp_path))
    assert f"{tmp_path / missing} is missing" in err and "http" in err


def test_corrupt_file_is_one_clear_line(tmp_path, capsys):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    err = _error(capsys, "--preset", "cifar10-40", "--data-root", str(tmp_path))
    assert "incomplete or corrupt" in err and "cifar-10-batches-py" in err


def test_missing_imagenet_val_folder_is_named(tmp_path, capsys):
    write_imagenet(tmp_path)
    shutil.rmtree(tmp_path / "val")
    err = _error(capsys, "--preset", "imagenet-1pct", "--data-root", str(tmp_path))
    assert f"{tmp_path / 'val'} is missing" in err


def test_more_labels_per_class_than_a_benchmark_class_has(tmp_path, capsys):
    write_cifar10(tmp_path)
    err = _error(capsys, "--preset", "cifar10-40", "--data-root", str(tmp_path), "--labels-per-class", "3")
    assert "has only 2 images but 3 labels per class" in err


def test_labelled_list_out_of_range_is_refused(tmp_path, capsys):
    write_cifar10(tmp_path)
    (tmp_path / "ids.json").write_text(json.dumps([0, 5, 99]))
    err = _error(capsys, "--preset", "cifar10-40", "--data-root", str(tmp_path), "--labeled-list", str(tmp_path / "ids.json"))
    assert "index 99" in err and "20 images" in err


def test_same_labelled_list_file_gives_the_same_benchmark_subset(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "ids.txt").write_text("3\n7\n11\n")
    data = build_data("cifar10", seed=5, labels_per_class=2, root=str(tmp_path), labeled_list=str(tmp_path / "ids.txt"))
    assert data.labelled_ids == [3, 7, 11] and len(data.labelled) == 3
    again = build_data("cifar10", seed=1, labels_per_class=2, root=str(tmp_path))
    assert again.labelled_ids == build_data("cifar10", seed=1, labels_per_class=2, root=str(tmp_path)).labelled_ids
    labels = np.asarray([again.unlabelled[i][1] for i in again.labelled_ids])
    assert np.bincount(labels, minlength=10).tolist() == [2] * 10


def test_one_dataset_registry_and_every_name_in_it_has_a_loader(tmp_path):
    """The configuration's names are the data layer's: each one is built (digits) or asks for its
    files, none is an unknown dataset."""
    import typing

    from comatch import config as cfg
    from comatch.data.sources import DATASETS
    from comatch.errors import UserError

    assert DATASETS is cfg.DATASETS and typing.get_args(cfg.DatasetName) == DATASETS
    for name in DATASETS:
        try:
            build_data(dataset=name, root=str(tmp_path), labels_per_class=1, seed=0)
        except UserError as err:
            assert "unknown dataset" not in str(err), name
    with pytest.raises(UserError, match="unknown dataset 'mnist'; choose one of: digits, cifar10"):
        build_data(dataset="mnist", root=str(tmp_path), labels_per_class=1, seed=0)
