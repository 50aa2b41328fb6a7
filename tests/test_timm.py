"""timm backbones: building, normalisation defaults, weights from files or the cache, layer decay.

Every model here has random weights; nothing reaches the network (the pretrained tests patch
timm's hub download, or point the hub at a cache written here, offline).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comatch.cli import main
from comatch.config import build_config
from comatch.errors import UserError
from comatch.models import build_model, param_groups_layer_decay
from comatch.models.optim import backbone_blocks
from comatch.models.pretrained import load_encoder_weights
from comatch.models.timm_backbone import backbone_data, backbone_data_defaults, timm_name

from datafiles import write_class_folder

timm = pytest.importorskip("timm")

TINY_TIMM = "timm:test_resnet"  # 160 px input, mean = std = (0.5, 0.5, 0.5) in timm's pretrained_cfg


def test_arch_names_and_pooled_features_reach_the_heads():
    assert timm_name("timm:resnet18") == timm_name("timm/resnet18") == "resnet18"
    model = build_model("timm/test_vit", num_classes=5, in_channels=3, proj_dim=8)
    logits, z = model(torch.randn(2, 3, 32, 32))
    assert model.feature_dim == model.encoder.net.num_features == 64
    assert logits.shape == (2, 5) and z.shape == (2, 8)
    assert torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-5)


def test_one_channel_backbone_and_bn_momentum_override():
    model = build_model("timm:resnet10t", num_classes=3, in_channels=1, bn_momentum=0.01)
    assert model.encoder.net.conv1[0].weight.shape[1] == 1
    momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.01}
    assert model(torch.randn(2, 1, 32, 32))[0].shape == (2, 3)


def test_unknown_timm_model_is_a_user_error():
    with pytest.raises(UserError, match="timm has no model 'no_such_net_xyz'"):
        build_model("timm:no_such_net_xyz", num_classes=2)


def test_backbone_data_fills_only_unset_fields():
    wanted = backbone_data(TINY_TIMM)
    assert wanted.image_size == 160 and wanted.mean == (0.5, 0.5, 0.5)
    config = build_config("folder", overrides=[f"model.arch={TINY_TIMM}", "data.image_size=null", "data.channels=null"])
    filled, notes = backbone_data_defaults(config)
    assert filled.data.image_size == 160 and filled.data.mean == [0.5, 0.5, 0.5] and filled.data.channels == 3
    assert filled.model.in_channels == 3 and len(notes) == 4  # image_size, channels, mean, std
    own = build_config(overrides=["model.arch=timm:resnet18", "data.image_size=48", "data.channels=1",
                                  "data.std=[0.3]"])
    filled, _ = backbone_data_defaults(own)
    assert filled.data.image_size == 48 and filled.data.std == [0.3]  # the user's settings win
    assert filled.data.mean == [pytest.approx((0.485 + 0.456 + 0.406) / 3)]  # RGB mean averaged for gray
    assert backbone_data_defaults(build_config())[1] == []  # not a timm model: unchanged


def test_init_from_a_timm_state_dict_and_a_checkpoint_holding_one(tmp_path):
    source = timm.create_model("resnet10t", pretrained=False, num_classes=7)  # has a classifier 'fc'
    torch.save(source.state_dict(), tmp_path / "plain.pth")
    torch.save({"epoch": 3, "state_dict": source.state_dict()}, tmp_path / "wrapped.pth")
    for name in ("plain.pth", "wrapped.pth"):
        model = build_model("timm:resnet10t", num_classes=2)
        report = load_encoder_weights(model.encoder, tmp_path / name)
        assert {"fc.weight", "fc.bias"} <= set(report.skipped) and not report.missing
        for key, value in model.encoder.net.state_dict().items():
            assert torch.equal(value, source.state_dict()[key]), key


def test_init_from_safetensors_adapts_rgb_weights_to_one_channel(tmp_path):
    from safetensors.torch import save_file

    source = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    model = build_model("timm:resnet10t", num_classes=2, in_channels=1)
    report = load_encoder_weights(model.encoder, tmp_path / "w.safetensors")
    assert not report.skipped and not report.missing
    first = source.conv1[0].weight  # [24, 3, 3, 3]
    assert torch.allclose(model.encoder.net.conv1[0].weight, first.sum(1, keepdim=True))
    gray = torch.rand(2, 1, 32, 32)
    source.eval(), model.eval()
    assert torch.allclose(model.encoder(gray), source(gray.expand(-1, 3, -1, -1)), atol=1e-4)


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face Hub cache and torch.hub folder under ``tmp_path``; the hub online."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hub"


def _weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict()


def _same(model, weights) -> bool:
    return all(torch.equal(model.encoder.net.state_dict()[k], v) for k, v in weights.items())


def test_pretrained_downloads_through_timms_own_path(hub, monkeypatch):
    """The network stands in as a patched hub download that writes the file timm asked for."""
    from safetensors.torch import save_file
    import timm.models._hub as timm_hub

    weights, calls = _weights(1), []

    def download(repo_id, filename, revision=None, cache_dir=None, **kwargs):
        from huggingface_hub import constants
        calls.append((repo_id, filename, constants.HF_HUB_OFFLINE))
        path = hub / "fetched" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(weights, str(path))
        return str(path)

    monkeypatch.setattr(timm_hub, "hf_hub_download", download)
    model = build_model(TINY_TIMM, num_classes=2, pretrained=True)
    assert calls == [("timm/test_resnet.r160_in1k", "model.safetensors", False)]  # online: a real download
    assert _same(model, weights)


def test_pretrained_reads_the_local_cache_offline(hub, monkeypatch):
    """A Hugging Face Hub cache written by hand (its documented layout) with HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    weights, commit = _weights(2), "0123456789abcdef0123456789abcdef01234567"
    repo = hub / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(weights, str(repo / "snapshots" / commit / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _same(build_model(TINY_TIMM, num_classes=2, pretrained=True), weights)


def test_pretrained_weights_neither_downloadable_nor_cached_is_one_line(hub, monkeypatch):
    import timm.models._hub as timm_hub

    def unreachable(*args, **kwargs):
        raise OSError("Cannot reach https://huggingface.co: connection refused")

    monkeypatch.setattr(timm_hub, "hf_hub_download", unreachable)
    with pytest.raises(UserError) as err:
        build_model("timm:resnet10t", num_classes=2, pretrained=True)
    message = str(err.value)
    assert "\n" not in message and "timm model 'resnet10t' could not be downloaded" in message
    assert str(hub) in message and "connection refused" in message and "model.init=FILE" in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE=1 allows no download"):
        build_model("timm:resnet10t", num_classes=2, pretrained=True)
    with pytest.raises(UserError, match="needs a timm model"):
        build_model("wrn10_1", num_classes=2, pretrained=True)


def test_layer_decay_gives_heads_lr_and_each_earlier_block_one_more_factor():
    model = build_model("timm:resnet10t", num_classes=2)
    blocks = backbone_blocks(model.encoder)
    assert [b[0].split(".")[1] for b in blocks] == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    groups = param_groups_layer_decay(model, lr=0.1, weight_decay=5e-4, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(0.1)
    assert lr_of[id(named["projector.0.weight"])] == pytest.approx(0.1)
    assert lr_of[id(named["encoder.net.layer4.0.conv1.weight"])] == pytest.approx(0.05)
    assert lr_of[id(named["encoder.net.layer1.0.conv1.weight"])] == pytest.approx(0.1 * 0.5**4)
    assert lr_of[id(named["encoder.net.conv1.0.weight"])] == pytest.approx(0.1 * 0.5**5)
    assert len(lr_of) == len(named)  # every parameter exactly once
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert wd[id(named["encoder.net.bn1.bias"])] == 0.0 and wd[id(named["classifier.weight"])] == 5e-4
    sgd = torch.optim.SGD(groups, lr=0.1)  # the groups are valid optimizer input
    assert {g["lr"] for g in sgd.param_groups} == {0.1 * 0.5**d for d in range(6)}


def test_layer_decay_follows_stage_order_of_built_in_networks():
    model = build_model("wrn10_1", num_classes=2)
    groups = param_groups_layer_decay(model, lr=1.0, weight_decay=0.0, layer_decay=0.5)
    named = dict(model.named_parameters())
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(named["encoder.stem.weight"])] == pytest.approx(0.5**5)  # stem, 3 groups, final bn
    assert lr_of[id(named["encoder.bn.weight"])] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\]"):
        param_groups_layer_decay(model, lr=1.0, weight_decay=0.0, layer_decay=0.0)


def test_timm_model_trains_two_steps_and_its_normalisation_reaches_the_export(tmp_path, capsys):
    write_class_folder(tmp_path / "lab", ["a", "b"], 4, size=(24, 24))
    write_class_folder(tmp_path / "unl" / "x", ["c"], 6, seed=1, size=(24, 24))
    run = tmp_path / "run"
    assert main(["train", "--labeled", str(tmp_path / "lab"), "--unlabeled", str(tmp_path / "unl"),
                 "--out", str(run), "--iterations", "2", f"model.arch={TINY_TIMM}", "data.image_size=32",
                 "data.mean=null", "data.std=null", "optim.batch_size=2", "optim.mu=1",
                 "data.num_workers=0", "run.eval_every=2", "run.tensorboard=false", "run.report=false"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 2
    data = json.loads((run / "data.json").read_text())
    assert data["mean"] == [0.5, 0.5, 0.5] and data["std"] == [0.5, 0.5, 0.5] and data["image_size"] == 32
    capsys.readouterr()
    assert main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    meta = json.loads(Path(tmp_path / "m.pt.json").read_text())
    assert meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and meta["preprocessing"]["std"] == [0.5, 0.5, 0.5]
    assert meta["input"]["shape"] == ["N", 3, 32, 32]
