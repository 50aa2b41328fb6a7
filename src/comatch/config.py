"""Typed, validated run configuration, YAML presets and ``key=value`` overrides.

A run's configuration is built in three layers: the defaults below, a preset (a YAML file in
``comatch/presets`` or any file given with ``--config``), then command-line overrides such as
``optim.lr=0.01``. Pydantic validates the result; every problem becomes a
:class:`~comatch.errors.UserError` with one line naming the field and what is allowed.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from comatch.errors import UserError

Method = Literal["comatch", "fixmatch", "supervised"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


DatasetName = Literal["digits", "cifar10", "cifar100", "stl10", "svhn", "imagenet", "folder"]


class DataConfig(_Section):
    dataset: DatasetName = Field(
        "digits", description="digits (bundled with scikit-learn); cifar10, cifar100, stl10, svhn, imagenet "
        "(publisher files under data.root); folder (your own images: data.labeled and friends).",
    )
    root: str = Field("data", description="Folder holding the benchmark files in their publishers' layouts (--data-root).")
    labeled: str | None = Field(None, description="Your labelled images, one sub-folder per class (--labeled); dataset folder.")
    unlabeled: str | None = Field(None, description="Your unlabelled images, any depth; class sub-folders are ignored (--unlabeled).")
    val: str | None = Field(None, description="Validation images, one sub-folder per class (--val); for tuning only.")
    test: str | None = Field(
        None, description="Test images, one sub-folder per class (--test); None: a stratified hold-out of the labelled folder."
    )
    holdout_fraction: float = Field(
        0.2, ge=0, lt=1, description="Share of each labelled class held out as the test set when no test folder is given."
    )
    labeled_list: str | None = Field(
        None, description="File naming the labelled subset (a run's labelled.json: indices, or paths for folders); "
        "overrides the label counts (--labeled-list).",
    )
    labels_per_class: int | None = Field(
        4, ge=1, description="Labelled images drawn per class with the run's seed (None with folders: every labelled image)."
    )
    num_labels: int | None = Field(
        None, ge=1, description="Total labelled images (balanced over classes); overrides labels_per_class."
    )
    val_per_class: int = Field(
        10, ge=0, description="Training images per class held out for tuning (digits); never trained on."
    )
    extra_unlabeled: bool = Field(False, description="SVHN: add the 531,131 images of extra_32x32.mat to the unlabelled data.")
    strict: bool = Field(False, description="Stop at the first unreadable image instead of skipping (and counting) it.")
    check_images: bool = Field(
        True, description="Decode every image file once before training, so unreadable ones are skipped up front "
        "(turn off for very large, trusted folders such as ImageNet).",
    )
    image_size: int | None = Field(
        None, ge=4, description="Side length the network sees, pixels; None: the benchmark's own, or computed from a sample of the files."
    )
    channels: int | None = Field(
        None, description="Image channels the network sees: 1 (grayscale) or 3 (RGB); None: from the data."
    )
    mean: list[float] | None = Field(None, description="Per-channel normalisation mean in [0, 1]; None: computed from a sample of the data.")
    std: list[float] | None = Field(None, description="Per-channel normalisation std; None: computed from a sample of the data.")
    num_workers: int | None = Field(
        None, ge=0, description="Data-loading worker processes per loader (0: in the training process; None: chosen from the CPU count)."
    )
    augment_on: Literal["cpu", "gpu"] = Field(
        "cpu", description="Where batches are augmented: 'cpu' (in the data workers, overlapping the step) or 'gpu' (on the training device, from uint8 batches)."
    )


class ViewConfig(_Section):
    crop_padding: int = Field(4, ge=0, description="Weak view: pad-and-crop translation, pixels.")
    flip: bool = Field(True, description="Horizontal flips; off for data whose labels change under flips (digits).")
    cutout: float = Field(0.5, ge=0, le=1, description="Strong view: Cutout side as a fraction of the image side.")
    randaugment_ops: int = Field(2, ge=0, description="Strong view: RandAugment operations per image.")
    randaugment_magnitude: int = Field(10, ge=1, le=10, description="Strong view: largest RandAugment magnitude (of 10).")
    crop_scale_min: float = Field(0.2, gt=0, le=1, description="Contrastive view: smallest random-resized-crop area.")
    jitter_prob: float = Field(0.8, ge=0, le=1, description="Contrastive view: probability of colour jitter (0.4, 0.4, 0.4, 0.1).")
    grayscale_prob: float = Field(0.2, ge=0, le=1, description="Contrastive view: probability of grayscale.")
    fill: int = Field(127, ge=0, le=255, description="Fill value of geometric ops and Cutout (0 for digits: black background).")
    weak: Literal["crop", "resized_crop"] = Field(
        "crop", description="Weak view: 'crop' (pad and crop, CIFAR/STL) or 'resized_crop' (random resized crop from crop_scale_min, ImageNet); both flip if 'flip'."
    )
    strong: Literal["fixmatch", "contrastive"] = Field(
        "fixmatch", description="First strong view: 'fixmatch' (weak + RandAugment + Cutout) or 'contrastive' (the contrastive view, as on ImageNet)."
    )


class ModelConfig(_Section):
    arch: str = Field(
        "digits_cnn", description="Encoder: digits_cnn, wrn28_2, wrn28_8, wrn37_2, wrn10_1, resnet18, resnet50, or a timm model "
        "as timm:NAME (extra comatch[timm]; its input size and normalisation become data.image_size/mean/std unless set).",
    )
    in_channels: int | None = Field(
        None, description="Channels the network takes; None: the data's. Grayscale data for an RGB network (3) is "
        "augmented as one channel and replicated after augmentation: the same views for a third of the work."
    )
    proj_dim: int = Field(64, ge=1, description="Projection-head output size D (64 CIFAR/STL, 128 ImageNet).")
    bn_momentum: float | None = Field(None, gt=0, le=1, description="BatchNorm momentum; None: the architecture's default (0.001 for WRN).")
    init: str | None = Field(
        None, description="Start the encoder from a weights file (MoCo v2, SimCLR, a torchvision or timm state_dict, .pth or .safetensors); None: random initialisation."
    )
    pretrained: bool = Field(
        False, description="timm models: start from the weights in timm's local cache (never downloaded; a pretrained start "
        "needs far fewer labels and steps). Fails with a message when they are not cached."
    )


class CoMatchConfig(_Section):
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the model's own prediction in the memory-smoothed label.")
    temperature: float = Field(0.2, gt=0, description="T: temperature of embedding similarities (0.2 CIFAR/STL, 0.1 ImageNet).")
    threshold: float = Field(0.95, ge=0, le=1, description="tau: confidence a pseudo-label needs to count in L_u.")
    graph_threshold: float = Field(0.8, ge=0, le=1, description="t: pseudo-label similarity needed for a graph edge.")
    lambda_u: float = Field(1.0, ge=0, description="Weight of the pseudo-label loss L_u.")
    lambda_c: float = Field(1.0, ge=0, description="Weight of the graph contrastive loss L_c (1 CIFAR-10, 5 STL-10).")
    da_window: int = Field(32, ge=1, description="Steps averaged by distribution alignment (32 CIFAR/STL, 128 ImageNet).")
    queue_batches: int = Field(5, ge=1, description="Memory bank size in steps: bank = queue_batches * (1 + mu) * batch_size (global batch: the bank holds every process's entries).")
    bank_size: int | None = Field(None, ge=1, description="Memory bank entries, global (the bank holds every process's entries); overrides queue_batches (30000 on ImageNet).")
    alignment: bool = Field(True, description="Ablation: distribution alignment on/off.")
    smoothing: bool = Field(True, description="Ablation: memory-smoothed pseudo-labels on/off.")
    contrastive: bool = Field(True, description="Ablation: graph contrastive loss on/off.")
    self_loop_only: bool = Field(False, description="Ablation: pseudo-label graph of self-loops only (instance contrast).")
    hard_labels: bool = Field(False, description="Ablation: one-hot instead of soft pseudo-labels in L_u and the graph.")
    momentum: float | None = Field(
        None, ge=0, lt=1, description="Large-scale variant: decay of the momentum encoder that makes the pseudo-labels and s1 embeddings (0.996 on ImageNet); None: the plain variant. Method comatch only."
    )
    queue_size: int = Field(
        0, ge=0, description="Large-scale variant: past s1 embeddings (global) that extend both graphs to mu*B + K columns (30000 on ImageNet); needs comatch.momentum."
    )
    lambda_c_ramp: bool = Field(
        False, description="Ramp lambda_c as min(epoch + 1, lambda_c), an epoch being one pass over the unlabelled set at the global unlabelled batch size (ImageNet)."
    )


class OptimConfig(_Section):
    batch_size: int = Field(16, ge=1, description="Labelled images per step, global (summed over processes).")
    mu: int = Field(7, ge=1, description="Unlabelled images per labelled image in a step (global unlabelled batch: mu * batch_size).")
    iterations: int = Field(2000, ge=1, description="Total training steps K.")
    lr: float = Field(0.03, gt=0, description="Initial learning rate; decays as lr * cos(7 pi k / (16 K)).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD (Nesterov) momentum.")
    nesterov: bool = Field(True, description="Nesterov momentum.")
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay on weights; BatchNorm parameters and biases are exempt.")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="Decay of the evaluation EMA of the weights.")
    ema_warmup: bool = Field(True, description="EMA decay warm-up min(decay, (1+k)/(10+k)), so short runs get a useful EMA.")
    layer_decay: float | None = Field(
        None, gt=0, le=1, description="Layer-wise learning-rate decay: heads get lr, each earlier encoder block lr * decay^depth "
        "(0.65-0.8 keeps a pretrained backbone's early layers close to their weights); None: one lr for all."
    )


class RunConfig(_Section):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    log_every: int = Field(50, ge=1, description="Steps between metrics.jsonl training lines.")
    eval_every: int = Field(250, ge=1, description="Steps between evaluations of the raw and EMA models.")
    threads: int | None = Field(None, ge=1, description="CPU threads for the training process; None: PyTorch's default.")
    checkpoint_every: int = Field(500, ge=1, description="Steps between checkpoints (also written at the end and on SIGTERM/SIGINT).")
    tensorboard: bool = Field(True, description="Write TensorBoard scalars to RUN_DIR/tensorboard.")
    nonfinite: Literal["skip", "stop"] = Field("skip", description="A step with a non-finite loss or gradient: skip it (and count it), or stop the run.")
    max_bad_steps: int = Field(3, ge=1, description="Stop after this many consecutive non-finite steps, even when skipping.")
    amp: Literal["auto", "none", "bf16", "fp16"] = Field(
        "auto", description="Mixed precision of the network's forward pass (the CoMatch arithmetic stays float32): bf16, or fp16 with loss scaling; auto: bf16 on CUDA GPUs that support it, none on the CPU."
    )
    channels_last: bool | None = Field(None, description="Channels-last memory format for network and images (faster convolutions on GPUs with tensor cores); None: on for CUDA, off on the CPU.")
    deterministic: bool = Field(
        False, description="Deterministic GPU kernels (torch.use_deterministic_algorithms, no cuDNN autotuning): bit-reproducible CUDA runs, at a cost in speed. CPU runs are reproducible without it."
    )
    compile: bool = Field(False, description="Run the network under torch.compile (slower start, faster steps on GPUs).")
    sync_bn: bool = Field(False, description="Synchronise BatchNorm statistics over all processes (CUDA only with several processes).")
    dist_timeout: int = Field(
        1800, ge=10, description="Seconds a collective waits for the other processes before the run fails (a dead or hung process never hangs the rest forever)."
    )
    report: bool = Field(True, description="When the run finishes, write plots and report.html to the run directory (a few seconds; `comatch report` makes them later).")
    baseline: bool = Field(
        False, description="At the end, fit logistic regression and kNN on frozen initial features (and on pixels for small images) "
        "of the labelled images and write their test accuracy to baseline.json: shows what the unlabelled data added."
    )
    report_embedding: Literal["pca", "tsne"] = Field("pca", description="2-D map of the test embeddings in the report: pca (instant) or tsne (clearer clusters; tens of seconds on a CPU).")


class Config(_Section):
    preset: str = Field("digits", description="Name of the preset this configuration started from.")
    description: str = Field("", description="One line about the preset (shown by `comatch presets`).")
    method: Method = Field("comatch", description="comatch, fixmatch or supervised.")
    seed: int = Field(0, ge=0, description="Seed of the labelled subset, initialisation, sampling and augmentation.")
    data: DataConfig = DataConfig()
    views: ViewConfig = ViewConfig()
    model: ModelConfig = ModelConfig()
    comatch: CoMatchConfig = CoMatchConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()

    @property
    def bank_size(self) -> int:
        """Memory bank entries K (global)."""
        if self.comatch.bank_size is not None:
            return self.comatch.bank_size
        return self.comatch.queue_batches * (1 + self.optim.mu) * self.optim.batch_size

    @model_validator(mode="after")
    def _check_consistency(self) -> "Config":
        step_entries = (1 + self.optim.mu) * self.optim.batch_size
        if self.method == "comatch" and self.comatch.smoothing and self.bank_size < step_entries:
            raise ValueError(
                f"comatch.bank_size ({self.bank_size}) is smaller than one step's entries "
                f"({step_entries} = (1 + mu) * batch_size); raise comatch.bank_size or queue_batches"
            )
        if self.comatch.queue_size > 0 and self.comatch.momentum is None:
            raise ValueError("comatch.queue_size needs the momentum encoder; set comatch.momentum (0.996 on ImageNet) or queue_size=0")
        d = self.data
        if d.channels not in (None, 1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {d.channels}")
        if self.model.in_channels not in (None, 1, 3) or (self.model.in_channels == 1 and d.channels == 3):
            raise ValueError("model.in_channels must be 1 or 3, and 3 for RGB data")
        for name in ("mean", "std"):
            stats = getattr(d, name)
            if stats is not None and len(stats) not in ((1, 3) if d.channels is None else (d.channels,)):
                raise ValueError(f"data.{name} needs {d.channels or '1 or 3'} values, got {len(stats)}")
        folders = [f"data.{k}" for k in ("labeled", "unlabeled", "val", "test") if getattr(d, k)]
        if d.dataset != "folder" and folders:
            raise ValueError(f"{folders[0]} is for your own images (dataset 'folder'), not {d.dataset!r}; "
                             f"drop it or set data.dataset=folder")
        return self


def preset_names() -> list[str]:
    """Names of the bundled presets."""
    folder = resources.files("comatch") / "presets"
    names = [p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")]
    # the default first, then by name with numbers in numeric order (cifar10-40 before cifar10-250)
    return sorted(names, key=lambda n: (n != "digits", [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]))


def load_preset(name: str) -> dict[str, Any]:
    """The raw mapping of a bundled preset. Raises UserError for an unknown name."""
    path = resources.files("comatch") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())} (see `comatch presets`)")
    return yaml.safe_load(path.read_text()) or {}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file. Raises UserError if missing or malformed."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read config file {path}: {err.strerror}; check the path") from err
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of config fields")
    return data


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise UserError(f"cannot read override {assignment!r}; write it as key=value, e.g. optim.lr=0.01")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"unknown config key {key!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **fields: Any,
) -> Config:
    """Resolve defaults + preset (or config file) + explicit fields + ``key=value`` overrides.

    Args:
        preset: bundled preset name (default ``digits`` unless ``config_file`` is given).
        config_file: a YAML file of config fields, used instead of a preset.
        overrides: ``dotted.key=value`` strings, applied last.
        **fields: top-level fields such as ``method`` or ``seed`` (None values are ignored).

    Raises:
        UserError: unknown preset or key, or a value of the wrong type or out of range.
    """
    if config_file is not None:
        raw = load_yaml(config_file)
    else:
        preset = preset or "digits"
        raw = _merge(load_preset(preset), {"preset": preset})
    raw = _merge(raw, {k: v for k, v in fields.items() if v is not None})
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate(raw)


def validate(raw: dict[str, Any]) -> Config:
    """Validate a raw mapping into a :class:`Config`, turning errors into one-line UserErrors."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err)) from None


def describe_validation_error(err: ValidationError) -> str:
    """One line naming the first offending field, its value and what is allowed."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown config key {where!r}; list the fields with `comatch train --show-config`"
    message = first["msg"].removeprefix("Value error, ")
    if not where:
        return f"invalid configuration: {message}"
    return f"invalid value {first.get('input')!r} for {where}: {message}"


def to_yaml(config: Config) -> str:
    """The fully resolved configuration as YAML (what a run directory's config.yaml holds)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
