"""Every preset resolves, builds its model and views, and matches the table in docs/presets.md."""

from pathlib import Path

import pytest
import torch
import yaml

from comatch.methods.comatch import bank_size
from comatch import config as cfg
from comatch.cli import main
from comatch.data.batch_views import BatchViews
from comatch.models import build_model
from comatch.data.preprocessing import view_settings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "presets.md"
CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "stl10": 10, "svhn": 10, "imagenet": 1000, "folder": 3}

# docs column -> (config getter, parser of the docs cell)
number = float
COLUMNS = {
    "dataset": (lambda c: c.data.dataset, str),
    "labels/class": (lambda c: c.data.labels_per_class, lambda s: None if s == "all" else int(s)),
    "network": (lambda c: c.model.arch, str),
    "size": (lambda c: c.data.image_size, int),
    "B": (lambda c: c.optim.batch_size, int),
    "mu": (lambda c: c.optim.mu, int),
    "lr": (lambda c: c.optim.lr, number),
    "wd": (lambda c: c.optim.weight_decay, number),
    "T": (lambda c: c.comatch.temperature, number),
    "alpha": (lambda c: c.comatch.alpha, number),
    "tau": (lambda c: c.comatch.threshold, number),
    "t": (lambda c: c.comatch.graph_threshold, number),
    "lambda_u": (lambda c: c.comatch.lambda_u, number),
    "lambda_c": (lambda c: c.comatch.lambda_c, number),
    "bank": (lambda c: bank_size(c.comatch, c.optim.batch_size, c.optim.mu), int),
    "da window": (lambda c: c.comatch.da_window, int),
    "proj dim": (lambda c: c.model.proj_dim, int),
    "pad": (lambda c: c.views.crop_padding, int),
    "flip": (lambda c: c.views.flip, lambda s: {"yes": True, "no": False}[s]),
    "cutout": (lambda c: c.views.cutout, number),
    "iterations": (lambda c: c.optim.iterations, int),
}


def docs_table(first_column: str, second_column: str) -> dict[str, dict[str, str]]:
    """Rows of the markdown table of docs/presets.md whose header starts with the two columns."""
    lines = DOCS.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} | {second_column} |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def resolve(name: str) -> cfg.Config:
    extra = ["data.labeled=/somewhere"] if name == "folder" else []
    return cfg.build_config(preset=name, overrides=extra)


def test_docs_list_exactly_the_presets_and_the_paper_benchmarks_are_there():
    names = cfg.preset_names()
    assert set(docs_table("preset", "dataset")) == set(names) == set(docs_table("preset", "source of the settings"))
    wanted = {"cifar10-40", "cifar10-250", "cifar10-4000", "cifar100-400", "cifar100-2500", "cifar100-10000",
              "stl10-1000", "svhn-40", "svhn-1000", "imagenet-1pct", "imagenet-10pct", "digits"}
    assert wanted <= set(names) and names[0] == "digits"


@pytest.mark.parametrize("name", cfg.preset_names())
def test_preset_matches_the_docs_table(name):
    config, row = resolve(name), docs_table("preset", "dataset")[name]
    assert set(COLUMNS) == set(row) - {"preset"}
    for column, (get, parse) in COLUMNS.items():
        expected = parse(row[column])
        assert get(config) == pytest.approx(expected) if isinstance(expected, float) else get(config) == expected, column
    assert config.preset == name and config.description


@pytest.mark.parametrize("name", cfg.preset_names())
def test_preset_builds_its_model_and_views(name):
    config = resolve(name)
    size, channels = config.data.image_size, config.data.channels
    model = build_model(config.model.arch, CLASSES[config.data.dataset], in_channels=channels,
                        proj_dim=config.model.proj_dim, bn_momentum=config.model.bn_momentum).eval()
    views = BatchViews(view_settings(config))
    images = torch.randint(0, 256, (2, channels, size + 3, size), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    batch = [views(view, images, generator) for view in ("weak", "strong", "contrastive")]
    assert all(b.shape == (2, channels, size, size) and b.dtype == torch.uint8 for b in batch)
    with torch.no_grad():  # one small image keeps this fast; every network pools adaptively
        logits, z = model(batch[0][:1, :, :32, :32].float() / 255)
    assert logits.shape == (1, CLASSES[config.data.dataset]) and z.shape == (1, config.model.proj_dim)
    assert torch.allclose(z.norm(dim=1), torch.ones(1), atol=1e-4)


def test_published_accuracy_and_commands_are_documented():
    rows = docs_table("preset", "source of the settings")
    published = {"cifar10-40": "93.09", "cifar10-250": "95.09", "cifar10-4000": "95.44", "stl10-1000": "79.80",
                 "imagenet-1pct": "66.0", "imagenet-10pct": "73.6"}
    for name, row in rows.items():
        accuracy = row["published CoMatch top-1"]
        assert accuracy.startswith(published[name]) if name in published else accuracy == "not published", name
        assert row["command"].startswith("`comatch train"), name
        if name not in ("digits", "folder"):
            assert f"--preset {name} " in row["command"] and "--data-root" in row["command"]
            assert float(row["GPU-hours (estimate)"]) > 0


def test_presets_command_prints_one_described_line_each(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == cfg.preset_names()
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)


# docs "Recipe switches" column -> presets it describes
SWITCH_COLUMNS = {
    "digits, folder (default)": ("digits", "folder"),
    "cifar10-\\*, cifar100-\\*, stl10-1000, svhn-\\*": ("cifar10-40", "cifar10-250", "cifar10-4000", "cifar100-400",
                                                    "cifar100-2500", "cifar100-10000", "stl10-1000", "svhn-40",
                                                    "svhn-1000"),
    "imagenet-\\*": ("imagenet-1pct", "imagenet-10pct"),
}


def _switch_value(cell: str, preset: str):
    """A recipe-switch cell as a config value: its first word as YAML would read it (``127 (digits 0)``: 0 for digits)."""
    if preset == "digits" and "(digits " in cell:
        cell = cell.split("(digits ")[1].rstrip(")")
    return yaml.safe_load(cell.split()[0])


def test_recipe_switch_table_matches_every_preset():
    rows = docs_table("field", "digits, folder (default)")
    assert len(rows) == 13
    covered = set()
    for field, row in rows.items():
        section, name = field.split(".")
        default = getattr(getattr(cfg.Config(), section), name)
        assert _switch_value(row["digits, folder (default)"], "folder") == default, field
        for column, presets in SWITCH_COLUMNS.items():
            for preset in presets:
                value = getattr(getattr(resolve(preset), section), name)
                assert value == _switch_value(row[column], preset), (field, preset)
                covered.add(preset)
    assert covered == set(cfg.preset_names())


PAPER_PRESETS = [n for n in cfg.preset_names() if n not in ("digits", "folder")]


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_select_the_released_recipe(name):
    config = resolve(name)
    v, o, m, c = config.views, config.optim, config.model, config.comatch
    assert (o.ema_warmup, o.ema_buffers, config.data.unlabeled_includes_labeled) == (False, "copy", False)
    assert m.init_scheme == "released"
    if config.data.dataset == "imagenet":
        assert (o.weight_decay_exempt, o.schedule, m.head_activation) == ("none", "epoch_half_cosine", "relu")
        assert (c.smoothing_from, c.momentum_first_epoch, c.momentum, c.queue_init) == ("first_epoch", 0.99, 0.996, "random")
    else:
        assert (v.randaugment, v.crop_offsets, v.fill, v.randaugment_magnitude, v.randaugment_ops) == \
            ("comatch", "released", 128, 10, 2)
        assert (o.weight_decay_exempt, o.schedule, m.head_activation) == ("norm", "cosine", "leaky_relu")
        assert (c.smoothing_from, c.momentum_first_epoch, c.queue_init) == ("full_bank", None, "empty")
        assert round(v.cutout * config.data.image_size) == 16, "released Cutout: 16 px"


@pytest.mark.parametrize("name", ["digits", "folder"])
def test_own_presets_keep_this_projects_recipe(name):
    config = resolve(name)
    v, o = config.views, config.optim
    assert (v.randaugment, v.crop_offsets, o.ema_warmup, o.ema_buffers) == ("fixmatch", "symmetric", True, "average")
    assert (o.weight_decay_exempt, o.schedule, config.model.head_activation) == ("norm_and_bias", "cosine", "leaky_relu")
    assert config.data.unlabeled_includes_labeled and config.comatch.smoothing_from == "start"
    assert config.model.init_scheme == "project"


def test_show_config_shows_the_released_recipe(capsys):
    assert main(["train", "--preset", "cifar10-40", "--show-config"]) == 0
    shown = capsys.readouterr().out
    for line in ("randaugment: comatch", "crop_offsets: released", "fill: 128", "ema_warmup: false",
                 "ema_buffers: copy", "weight_decay_exempt: norm", "unlabeled_includes_labeled: false",
                 "smoothing_from: full_bank", "schedule: cosine"):
        assert f"  {line}\n" in shown, line
