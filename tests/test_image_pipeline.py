"""One image pipeline: the trainer's evaluation, `evaluate --test` and `predict` feed a file
to the network identically; hand-worked values for the decoding steps themselves."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from comatch.config import build_config
from comatch.data.images import UnreadableImage, decode_image, pipeline_description
from comatch.data.loaders import eval_loader
from comatch.data.preprocessing import Normalizer, eval_view, run_data
from comatch.tools.inference.checkpoint import LoadedModel, evaluate, evaluation_data, predict_files

SIZE = 12


class Recorder(nn.Module):
    """A stand-in network that keeps every input batch it is given."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes, self.inputs = num_classes, []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return x.flatten(1)[:, :4]  # [N, 4]

    def heads(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(feats), self.num_classes), feats

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.features(x))


def write_odd_images(folder: Path) -> dict[str, Path]:
    """A non-square RGBA, a palette and a 16-bit grayscale image (random content, fixed seed)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"rgba": folder / "rgba.png", "palette": folder / "palette.png", "gray16": folder / "gray16.png"}
    rgba = rng.integers(0, 256, size=(9, 17, 4), dtype=np.uint8)  # upscaled: shorter side 9 -> 12
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    palette = Image.fromarray(rng.integers(0, 256, size=(30, 20, 3), dtype=np.uint8)).quantize(16)
    palette.save(paths["palette"])
    gray16 = Image.fromarray(rng.integers(0, 65536, size=(16, 25), dtype=np.uint16))
    assert gray16.mode == "I;16"
    gray16.save(paths["gray16"])
    return paths


def write_run_folders(root: Path) -> dict[str, Path]:
    """Labelled, unlabelled and test folders of a two-class run; the test folder holds the odd images."""
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        for i in range(3):
            for part in ("labeled", "unlabeled"):
                path = root / part / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, size=(14, 14, 3), dtype=np.uint8)).save(path)
    odd = write_odd_images(root / "test" / "a")
    odd.update({f"b_{k}": v for k, v in write_odd_images(root / "test" / "b").items()})
    return odd


def by_name(paths, batches) -> dict[str, torch.Tensor]:
    """``{parent/name: network input [C, S, S]}`` from batches recorded in file order."""
    rows = torch.cat(batches)
    assert len(rows) == len(paths)
    return {f"{Path(p).parent.name}/{Path(p).name}": row for p, row in zip(paths, rows)}


@pytest.mark.parametrize("channels", [1, 3])
def test_trainer_evaluation_evaluate_and_predict_give_identical_network_inputs(tmp_path, channels):
    odd = write_run_folders(tmp_path)
    config = build_config("folder", overrides=[
        f"data.labeled={tmp_path / 'labeled'}", f"data.unlabeled={tmp_path / 'unlabeled'}",
        f"data.test={tmp_path / 'test'}", f"data.image_size={SIZE}", f"data.channels={channels}",
        "data.labels_per_class=2", "data.num_workers=0"])
    data = run_data(config)  # what the trainer evaluates on: the --test folder as a dataset

    # The trainer's evaluation: its eval view and its normalisation.
    trainer_view = eval_view(config, data.image_size)
    normalize = Normalizer(data.mean, data.std, channels, torch.device("cpu"))
    trainer = [normalize(images) for images, _ in eval_loader(data.test, trainer_view, batch_size=4)]
    trainer_inputs = by_name(data.test.paths, trainer)

    # A checkpoint of that run, as `evaluate` and `predict` load it (the network records its input).
    recorder = Recorder(data.num_classes)
    loaded = LoadedModel(recorder, config, data.class_names, data.mean, data.std, torch.device("cpu"),
                         "ema", 0, tmp_path / "last.pt", channels, SIZE)
    folder = evaluation_data(loaded, test_dir=tmp_path / "test")  # evaluate --test DIR
    evaluate(loaded, folder, batch_size=4)
    evaluate_inputs = by_name([path for path, _ in folder.items], recorder.inputs)
    recorder.inputs.clear()
    files = sorted(odd.values())
    results = predict_files(loaded, files, batch_size=4, progress=False)  # predict FILE...
    assert all(r.error == "" for r in results)
    predict_inputs = by_name(files, recorder.inputs)

    assert sorted(trainer_inputs) == sorted(evaluate_inputs) == sorted(predict_inputs)
    assert len(trainer_inputs) == 6
    for key, expected in trainer_inputs.items():
        assert expected.shape == (channels, SIZE, SIZE) and expected.dtype == torch.float32
        assert torch.equal(evaluate_inputs[key], expected), key
        assert torch.equal(predict_inputs[key], expected), key
    # ... and that input is the one decode_image defines, normalised.
    direct = normalize(decode_image(odd["rgba"], SIZE, channels).unsqueeze(0))[0]
    assert torch.equal(trainer_inputs["a/rgba.png"], direct)


# ----------------------------------------------------------------------------- hand-worked values
def test_transparency_is_composited_over_black(tmp_path):
    rgba = np.array([[[200, 100, 255, 128], [200, 100, 255, 0], [10, 20, 30, 255]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")  # 1 x 3
    image = decode_image(tmp_path / "rgba.png", 1, 3)  # centre column (left = round(1.0) = 1)
    assert image[:, 0, 0].tolist() == [0, 0, 0]  # fully transparent -> black
    Image.fromarray(rgba[:, :1].repeat(2, 0).repeat(2, 1), "RGBA").save(tmp_path / "half.png")  # 2 x 2
    assert decode_image(tmp_path / "half.png", 2, 3)[:, 0, 0].tolist() == [100, 50, 128]  # round(v * 128 / 255)
    la = Image.fromarray(np.array([[[255, 64], [90, 255]]], dtype=np.uint8), "LA")  # 1 x 2
    la.resize((2, 2), Image.NEAREST).save(tmp_path / "la.png")
    assert decode_image(tmp_path / "la.png", 2, 1)[0].tolist() == [[64, 90], [64, 90]]  # 255 * 64 / 255
    # gray + alpha to RGB: the composited gray value repeated in R, G, B
    assert decode_image(tmp_path / "la.png", 2, 3)[:, 0, 0].tolist() == [64, 64, 64]


def test_palette_transparency_and_colours(tmp_path):
    palette = Image.new("P", (2, 2))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, 1 blue
    palette.putdata([0, 1, 1, 0])
    palette.save(tmp_path / "p.png")
    assert decode_image(tmp_path / "p.png", 2, 3).permute(1, 2, 0).tolist() == \
        [[[255, 0, 0], [0, 0, 255]], [[0, 0, 255], [255, 0, 0]]]
    assert decode_image(tmp_path / "p.png", 2, 1)[0].tolist() == [[76, 29], [29, 76]]  # ITU-R 601 luma
    palette.save(tmp_path / "pt.png", transparency=1)  # blue is transparent -> black
    assert decode_image(tmp_path / "pt.png", 2, 3).permute(1, 2, 0).tolist() == \
        [[[255, 0, 0], [0, 0, 0]], [[0, 0, 0], [255, 0, 0]]]


def test_sixteen_bit_values_become_v_floor_257(tmp_path):
    values = np.array([[0, 257, 65535, 300], [514, 256, 65534, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    image = decode_image(tmp_path / "g16.png", 2, 1)[0]  # 2 x 4 -> centre columns 1, 2 (round(1.0))
    assert image.tolist() == [[1, 255], [0, 254]]
    assert decode_image(tmp_path / "g16.png", 2, 3).shape == (3, 2, 2)


def test_centre_crop_and_shorter_side_resize_on_tiny_images(tmp_path):
    row = np.array([[10, 20, 30, 40, 50]], dtype=np.uint8)
    Image.fromarray(np.repeat(row, 2, 0), "L").save(tmp_path / "wide.png")  # 2 x 5, already S = 2 high
    assert decode_image(tmp_path / "wide.png", 2, 1)[0].tolist() == [[30, 40]] * 2  # left = round(1.5) = 2
    column = np.array([[10], [20], [30]], dtype=np.uint8)
    Image.fromarray(np.repeat(column, 2, 1), "L").save(tmp_path / "tall.png")  # 3 x 2
    assert decode_image(tmp_path / "tall.png", 2, 1)[0].tolist() == [[10, 10], [20, 20]]  # top = round(0.5) = 0
    # 2 x 4 -> shorter side 1, longer side 2 (antialiased bilinear at scale 1/2: a triangle
    # of half-width 2 input pixels). Output column 0 is centred at input x = 1.0: columns 0, 1, 2
    # (centres 0.5, 1.5, 2.5) weigh 0.75, 0.75, 0.25, i.e. 3/7, 3/7, 1/7; rows 0, 1 weigh 1/2
    # each. (3 * (0 + 100 + 200 + 60) + 7 + 7) / 14 = 78.14 -> 78; the centre 1 x 1 of 1 x 2 is
    # column round(0.5) = 0.
    block = np.array([[0, 100, 7, 7], [200, 60, 7, 7]], dtype=np.uint8)
    Image.fromarray(block, "L").save(tmp_path / "block.png")
    assert decode_image(tmp_path / "block.png", 1, 1).tolist() == [[[78]]]
    # a non-square photo is never squashed: a 4 x 8 image's centre 4 x 4 survives unresized
    stripes = np.tile(np.arange(8, dtype=np.uint8) * 30, (4, 1))
    Image.fromarray(stripes, "L").save(tmp_path / "stripes.png")
    assert decode_image(tmp_path / "stripes.png", 4, 1)[0, 0].tolist() == [60, 90, 120, 150]


def test_unreadable_files_say_why(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    for path, reason in ((tmp_path / "missing.png", "no such file"), (tmp_path, "a folder, not an image"),
                         (tmp_path / "text.png", "not an image file, or damaged")):
        with pytest.raises(UnreadableImage, match=reason):
            decode_image(path, 4, 3)


def test_export_description_names_the_same_size_and_steps():
    described = pipeline_description(32, 3)
    assert described["resize"] == {"shorter_side": 32, "interpolation": "bilinear", "antialias": True}
    assert described["crop"] == {"center": [32, 32]} and described["channels"] == 3
    assert any("value // 257" in step for step in described["steps"])
    assert any("round(value * alpha / 255)" in step for step in described["steps"])
