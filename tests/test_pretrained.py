"""model.init: MoCo v2, SimCLR and torchvision checkpoints into our encoders; refusal of a mismatch."""

import pytest
import torch
from torchvision.models import resnet18

from comatch.cli import main
from comatch.errors import UserError
from comatch.models import ResNetEncoder, build_model
from comatch.models.pretrained import load_encoder_weights


@pytest.fixture(scope="module")
def torchvision_weights():
    torch.manual_seed(1)
    return resnet18(weights=None).state_dict()


def assert_encoder_equals(encoder, weights):
    mine = encoder.state_dict()
    for key, tensor in weights.items():
        if not key.startswith("fc."):
            assert torch.equal(mine[f"net.{key}"], tensor), key


def test_moco_v2_checkpoint_loads_the_query_encoder_only(tmp_path, torchvision_weights):
    state = {f"module.encoder_q.{k}": v for k, v in torchvision_weights.items() if not k.startswith("fc.")}
    state |= {"module.encoder_q.fc.0.weight": torch.zeros(512, 512),
              "module.encoder_q.fc.2.weight": torch.zeros(128, 512),
              "module.encoder_k.conv1.weight": torch.zeros(64, 3, 7, 7), "module.queue": torch.zeros(128, 10)}
    path = tmp_path / "moco.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state}, path)
    encoder = ResNetEncoder("resnet18")
    report = load_encoder_weights(encoder, path)
    assert_encoder_equals(encoder, torchvision_weights)
    assert set(report.skipped) == {"module.encoder_q.fc.0.weight", "module.encoder_q.fc.2.weight",
                                   "module.encoder_k.conv1.weight", "module.queue"}
    assert report.missing == [] and len(report.loaded) == len(encoder.state_dict())
    assert f"loaded {len(encoder.state_dict())} encoder tensors" in report.summary(path)


@pytest.mark.parametrize("prefix", ["", "backbone.", "module."])
def test_simclr_and_torchvision_layouts(tmp_path, torchvision_weights, prefix):
    state = {f"{prefix}{k}": v for k, v in torchvision_weights.items()}
    state |= {"projection_head.0.weight": torch.zeros(128, 512)}
    path = tmp_path / "simclr.ckpt"
    torch.save({"state_dict": state} if prefix else state, path)
    encoder = ResNetEncoder("resnet18")
    report = load_encoder_weights(encoder, path)
    assert_encoder_equals(encoder, torchvision_weights)
    assert set(report.skipped) == {f"{prefix}fc.weight", f"{prefix}fc.bias", "projection_head.0.weight"}


def test_mismatched_shapes_are_skipped_and_reported(tmp_path, torchvision_weights):
    path = tmp_path / "odd.pt"
    torch.save(torchvision_weights | {"conv1.weight": torch.zeros(64, 3, 5, 5)}, path)
    encoder = ResNetEncoder("resnet18")
    report = load_encoder_weights(encoder, path)
    assert report.skipped["conv1.weight"] == "shape (64, 3, 5, 5) != (64, 3, 7, 7)"
    assert report.missing == ["net.conv1.weight"]


def test_rgb_first_convolution_loads_into_a_one_channel_encoder_as_its_channel_sum(tmp_path, torchvision_weights):
    path = tmp_path / "rgb.pt"
    torch.save(torchvision_weights, path)
    encoder = ResNetEncoder("resnet18", in_channels=1)  # its first convolution takes one channel
    report = load_encoder_weights(encoder, path)
    assert "conv1.weight" not in report.skipped and report.missing == []
    expected = torchvision_weights["conv1.weight"].sum(dim=1, keepdim=True)  # [64, 1, 7, 7]
    assert torch.equal(encoder.state_dict()["net.conv1.weight"], expected)


def test_a_checkpoint_that_fits_nothing_or_is_missing_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"transformer.layer.0.weight": torch.zeros(3)}}, path)
    encoder = build_model("digits_cnn", 10, in_channels=1).encoder
    with pytest.raises(UserError, match="no tensor of .* fits the encoder"):
        load_encoder_weights(encoder, path)
    with pytest.raises(UserError, match="nope.pt does not exist"):
        load_encoder_weights(encoder, tmp_path / "nope.pt")


def test_cli_starts_from_init_and_refuses_a_bad_one_with_exit_2(tmp_path, capsys):
    source = build_model("digits_cnn", 10, in_channels=1)
    path = tmp_path / "ssl.pt"
    torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in source.encoder.state_dict().items()}}, path)
    out = tmp_path / "run"
    tiny = ["--iterations", "1", "data.num_workers=0", "optim.batch_size=4", "optim.mu=2",
            "run.tensorboard=false", "optim.lr=1e-9"]
    assert main(["train", "--out", str(out), *tiny, f"model.init={path}"]) == 0
    assert f"init: loaded {len(source.encoder.state_dict())} encoder tensors" in capsys.readouterr().out
    trained = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["model"]
    weight = "encoder.body.0.0.weight"
    assert torch.allclose(trained[weight], source.encoder.state_dict()["body.0.0.weight"], atol=1e-6)
    torch.save({"epoch": 3}, path)
    assert main(["train", "--out", str(tmp_path / "bad"), *tiny, f"model.init={path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("comatch: error: model.init:") and "\n" not in err
