"""Shards of the global batch, the ImageNet views and presets, mixed precision and channels-last."""

import json

import pytest
import torch
from torchvision.transforms import v2

from comatch import CoMatchCriterion, distributed
from comatch.training import parallel
from comatch.cli import main
from comatch.config import build_config
from comatch.data.batch_views import BatchViews, ViewSettings, WeakCropParams, sample_weak_params
from oracle_views import build_views
from comatch.data.datasets import BatchViewDataset, TensorImages, shard_rows
from comatch.errors import UserError
from comatch.models import CoMatchNet, build_model
from comatch.methods.momentum import MomentumCoMatchCriterion

IMAGENET_RECIPE = ViewSettings(image_size=16, weak="resized_crop", strong="contrastive")


@pytest.mark.parametrize("settings", [ViewSettings(image_size=16), IMAGENET_RECIPE], ids=["cifar", "imagenet"])
def test_a_share_of_a_batch_is_augmented_as_in_the_whole_batch(settings):
    views = BatchViews(settings)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    for name in ("weak", "strong", "contrastive", "eval"):
        whole = views(name, images, torch.Generator().manual_seed(7))
        shares = [views(name, images[lo:lo + 2], torch.Generator().manual_seed(7), start=lo, total=6)
                  for lo in (0, 2, 4)]
        assert torch.equal(torch.cat(shares), whole), name
    with pytest.raises(ValueError, match=r"rows \[4, 7\) do not lie in a batch of 6"):
        views("weak", images[:3], None, start=4, total=6)


def test_shards_of_the_loader_batches_make_up_the_global_batch():
    base = TensorImages(torch.randint(0, 256, (23, 1, 8, 8), dtype=torch.uint8), torch.arange(23))
    names = {"weak": "weak", "strong": "strong", "contrastive": "contrastive"}
    views = BatchViews(ViewSettings(image_size=8))
    whole = BatchViewDataset(base, 6, views, names, seed=5)
    parts = [BatchViewDataset(base, 6, views, names, seed=5, shard=(r, 3)) for r in range(3)]
    for batch in (0, 3, 4):  # batch 3 crosses a pass over the data
        expected = whole[batch]
        got = [part[batch] for part in parts]
        assert list(expected.views) == list(names)
        for key in names:
            assert torch.equal(torch.cat([g.views[key] for g in got]), expected.views[key])
        for field in ("labels", "indices"):
            assert torch.equal(torch.cat([getattr(g, field) for g in got]), getattr(expected, field))
        assert all(g.seed == expected.seed for g in got), "same augmentation seed"
    raw = [BatchViewDataset(base, 6, None, names, seed=5, shard=(r, 2))[1].images for r in range(2)]
    assert torch.equal(torch.cat(raw), BatchViewDataset(base, 6, None, names, seed=5)[1].images)
    with pytest.raises(ValueError, match="cannot be split evenly over 4 processes"):
        shard_rows(6, 0, 4)


def test_imagenet_views_weak_resized_crop_and_strong_contrastive():
    assert isinstance(sample_weak_params(4, IMAGENET_RECIPE, None), WeakCropParams)
    per_image = build_views(IMAGENET_RECIPE)
    assert isinstance(per_image["weak"].transforms[0], v2.RandomResizedCrop)
    assert isinstance(per_image["strong"].transforms[0], v2.RandomResizedCrop)
    assert isinstance(per_image["strong"].transforms[-1], v2.RandomGrayscale)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    batched = BatchViews(IMAGENET_RECIPE)
    for name in ("weak", "strong"):
        assert batched(name, images, torch.Generator().manual_seed(0)).shape == (4, 3, 16, 16)
    same = [batched(n, images, torch.Generator().manual_seed(3)) for n in ("strong", "contrastive")]
    assert torch.equal(*same), "the strong view is the contrastive view"


@pytest.mark.parametrize("name, tau, t, lambda_c", [("imagenet-1pct", 0.6, 0.3, 10), ("imagenet-10pct", 0.5, 0.2, 2)])
def test_imagenet_presets_hold_the_papers_settings(name, tau, t, lambda_c):
    config = build_config(preset=name)
    c, o = config.comatch, config.optim
    assert (config.data.dataset, config.data.image_size, config.model.arch, config.model.proj_dim) == \
        ("imagenet", 224, "resnet50", 128)
    assert (c.threshold, c.graph_threshold, c.lambda_c, c.lambda_u) == (tau, t, lambda_c, 10)
    assert (c.temperature, c.da_window, c.bank_size, c.momentum, c.lambda_c_ramp) == (0.1, 128, 30000, 0.996, True)
    assert (o.batch_size, o.batch_size * o.mu, o.lr, o.weight_decay) == (160, 640, 0.1, 1e-4)
    unlabelled = 1_281_167 - config.data.labels_per_class * 1000  # the released pool leaves the labelled images out
    assert not config.data.unlabeled_includes_labeled
    assert o.iterations == 400 * -(-unlabelled // 640), "400 epochs of the unlabelled images"
    assert (config.views.weak, config.views.strong) == ("resized_crop", "contrastive")


def test_imagenet_recipe_trains_on_digits_in_bf16_channels_last(tmp_path, monkeypatch):
    """The 1% preset with the data and network swapped for digits: momentum encoder, queue, ramp,
    views switches, on-device augmentation, bf16 autocast, channels-last; the criterion gets float32."""
    seen = []
    original = CoMatchCriterion.forward

    def forward(self, *args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.is_floating_point()]
        seen.append(({a.dtype for a in tensors}, torch.is_autocast_enabled("cpu"), self.lambda_c))
        return original(self, *args, **kwargs)

    network = []
    original_net = CoMatchNet.forward

    def net_forward(self, x):
        logits, z = original_net(self, x)
        network.append((logits.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return logits, z

    monkeypatch.setattr(CoMatchCriterion, "forward", forward)
    monkeypatch.setattr(CoMatchNet, "forward", net_forward)
    out = tmp_path / "run"
    overrides = ["data.dataset=digits", "data.image_size=8", "data.channels=1", "data.mean=null", "data.std=null",
                 "data.labels_per_class=4", "data.num_workers=0", "model.arch=digits_cnn", "optim.batch_size=4",
                 "optim.mu=2", "comatch.bank_size=48", "comatch.queue_size=16", "run.device=cpu", "run.amp=bf16",
                 "run.channels_last=true", "run.tensorboard=false", "run.log_every=1", "views.flip=false"]
    assert main(["train", "--preset", "imagenet-1pct", "--out", str(out), "--iterations", "3", *overrides]) == 0
    assert [s[0] for s in seen] == [{torch.float32}] * 3 and not any(s[1] for s in seen)
    assert network[:6] == [(torch.bfloat16, True)] * 6, "momentum encoder and network, each step"
    assert [s[2] for s in seen] == [1.0] * 3, "epoch 0 of the ramp: lambda_c = 1"
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert "momentum_encoder.module.encoder.conv1.weight" in state["method"] or any(
        k.startswith("momentum_encoder.module.") for k in state["method"])
    assert int(state["method"]["criterion.queue.num_filled"]) == 16
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in records if r["kind"] == "train"), "finite losses"
    assert issubclass(MomentumCoMatchCriterion, CoMatchCriterion)


def test_process_count_must_divide_the_global_batches_and_sync_bn_needs_cuda(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert parallel.batch_rows(6, "labelled") == (2, 4)
    with pytest.raises(UserError, match="global labelled batch of 4 cannot be split evenly over 3 processes"):
        parallel.batch_rows(4, "labelled")
    model = build_model("digits_cnn", 10, in_channels=1)
    with pytest.raises(UserError, match="run.sync_bn needs CUDA"):
        parallel.prepare_network(model, torch.device("cpu"), sync_bn=True, channels_last=False)


RECIPES = {"cifar": ViewSettings(image_size=16), "imagenet": IMAGENET_RECIPE,
           "comatch-randaugment": ViewSettings(image_size=16, randaugment="comatch")}


@pytest.mark.parametrize("settings", list(RECIPES.values()), ids=list(RECIPES))
def test_several_batches_augmented_together_are_those_augmented_one_by_one(settings):
    """Each view's operations run once over several batches (on small images the per-operation
    overhead is most of the cost): the same tensors, bit for bit, as batch by batch, also for
    a share of each batch."""
    views = BatchViews(settings)
    names = {"weak": "weak", "strong": "strong", "contrastive": "contrastive"}
    batches = [torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(k))
               for k in range(3)]
    for start, rows, total in ((0, 6, None), (2, 2, 6)):
        together = views.views_of_batches(
            names, [(images[start:start + rows], torch.Generator().manual_seed(10 + k)) for k, images in enumerate(batches)],
            start=start, total=total)
        for k, images in enumerate(batches):
            generator = torch.Generator().manual_seed(10 + k)
            one = {key: views(kind, images[start:start + rows], generator, start=start, total=total)
                   for key, kind in names.items()}
            assert list(together[k]) == list(names)
            for key in names:
                assert torch.equal(together[k][key], one[key]), (k, key)
    with pytest.raises(ValueError, match="must hold the same number of images"):
        views.views_of_batches(names, [(batches[0], None), (batches[1][:4], None)])


def test_the_loader_dataset_in_groups_gives_the_same_batches_from_any_start():
    base = TensorImages(torch.randint(0, 256, (23, 1, 8, 8), dtype=torch.uint8), torch.arange(23))
    names = {"weak": "weak", "strong": "strong", "contrastive": "contrastive"}
    views = BatchViews(ViewSettings(image_size=8))
    one_by_one = BatchViewDataset(base, 6, views, names, seed=5)
    grouped = BatchViewDataset(base, 6, views, names, seed=5, group=4)
    for batch in (3, 4, 5, 6, 7, 8, 2, 9):  # a resume in mid-group, then a jump back
        expected, got = one_by_one[batch], grouped[batch]
        for key in names:
            assert torch.equal(got.views[key], expected.views[key]), (batch, key)
        assert torch.equal(got.labels, expected.labels) and torch.equal(got.indices, expected.indices)
        assert got.seed == expected.seed
    assert len(grouped._ready) <= 3, "keeps at most the rest of one group"
    raw = BatchViewDataset(base, 6, None, names, seed=5, group=4)  # augmented on the device: no grouping
    assert torch.equal(raw[1].images, BatchViewDataset(base, 6, None, names, seed=5)[1].images)
    assert raw._ready == {}
