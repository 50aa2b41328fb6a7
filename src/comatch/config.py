"""Typed, validated run configuration, YAML presets and ``key=value`` overrides.

A run's configuration is built in three layers: the defaults below, a preset (a YAML file in
``comatch/presets`` or any file given with ``--config``), then command-line overrides such as
``optim.lr=0.01``. Pydantic validates the result; every problem becomes a
:class:`~comatch.errors.UserError` with one line naming the field and what is allowed.
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, ValidationError, create_model, model_validator

from comatch.errors import UserError
from comatch.config_files import apply_override, load_preset, load_yaml, merge, preset_names  # noqa: F401 (re-exported)
from comatch.methods import METHODS, MethodSettings

Method = Literal[tuple(METHODS)]  # type: ignore[valid-type]
"""The training methods, by name: the keys of :data:`comatch.methods.METHODS`."""

FIXMATCH_FROM_COMATCH = ("threshold", "lambda_u")
"""The ``fixmatch`` settings that configurations written before its section kept under ``comatch``."""


RESUMABLE = {"resumable": True}
"""Marks a field that ``--resume`` may change: where files are, how fast or how verbosely
the run goes, or how long it is; never what a step computes from what it sees."""


class _Section(MethodSettings):
    """A configuration section: unknown keys are errors, assignments are validated."""


DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "stl10", "svhn", "imagenet", "folder")
"""The datasets, by name: the one list (:func:`comatch.data.build_data` loads each)."""
DatasetName = Literal[DATASETS]  # type: ignore[valid-type]


class DataConfig(_Section):
    dataset: DatasetName = Field(
        "digits", description="digits (bundled with scikit-learn); cifar10, cifar100, stl10, svhn, imagenet "
        "(publisher files under data.root); folder (your own images: data.labeled and friends).",
    )
    root: str = Field("data", description="Folder holding the benchmark files in their publishers' layouts (--data-root).", json_schema_extra=RESUMABLE)
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
    extra_labels: str | None = Field(
        None, description="Decisions file of `comatch label` (RUN/labels.csv: path,label,time), own folders only: "
        "images labelled with a class join the labelled set, 'exclude' ones leave the unlabelled pool (--extra-labels).",
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
    strict: bool = Field(False, description="Stop at the first unreadable image instead of skipping (and counting) it.", json_schema_extra=RESUMABLE)
    check_images: bool = Field(
        True, description="Decode the image files once before training (a large unlabelled folder on a sample: "
        "data.check_sample), so unreadable ones are skipped up front (turn off for very large, trusted folders such "
        "as ImageNet).", json_schema_extra=RESUMABLE)
    check_sample: int | None = Field(
        20000, ge=1, description="An unlabelled folder with more files than this has a fixed random sample of this many "
        "decoded before training (the run stops if over 5% fail) and the rest decoded as training reads them, unreadable "
        "ones replaced and counted alike (a million small files: 88 s to the first step instead of 439 s on a busy 2-core "
        "machine); copies of labelled and test images are found all the same. None: decode every file first (data.strict does too).",
        json_schema_extra=RESUMABLE)
    image_size: int | None = Field(
        None, ge=4, description="Side length the network sees, pixels; None: the benchmark's own, or computed from a sample of the files."
    )
    channels: int | None = Field(
        None, description="Image channels the network sees: 1 (grayscale) or 3 (RGB); None: from the data."
    )
    mean: list[float] | None = Field(None, description="Per-channel normalisation mean in [0, 1]; None: computed from a sample of the data.")
    std: list[float] | None = Field(None, description="Per-channel normalisation std; None: computed from a sample of the data.")
    num_workers: int | None = Field(
        None, ge=0, description="Data-loading worker processes per loader (0: in the training process; None: chosen from the CPU count).", json_schema_extra=RESUMABLE)
    exclude_outliers: float = Field(
        0.0, ge=0, lt=1, description="Share of the unlabelled images left out of training as likely outliers (images of "
        "no labelled class), scored before training with the initial network's features (see docs/trust.md); 0: keep all."
    )
    augment_on: Literal["cpu", "gpu"] = Field(
        "cpu", description="Where batches are augmented: 'cpu' (in the data workers, overlapping the step) or 'gpu' (on the training device, from uint8 batches).", json_schema_extra=RESUMABLE)
    unlabeled_includes_labeled: bool = Field(
        True, description="Whether the unlabelled pool also holds the labelled images (true: as FixMatch; false: as the released "
        "CoMatch code, which trains the unlabelled losses on the other images only). Benchmarks and folders alike."
    )

    @field_validator("mean")
    @classmethod
    def _finite_mean(cls, values: list[float] | None) -> list[float] | None:
        """Every mean a finite number (images are divided by std after subtracting it)."""
        if values is not None and not all(math.isfinite(v) for v in values):
            raise ValueError("every value must be a finite number")
        return values

    @field_validator("std")
    @classmethod
    def _positive_std(cls, values: list[float] | None) -> list[float] | None:
        """Every std a finite number above 0: images are divided by it."""
        if values is not None and not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError("every value must be a finite number above 0 (images are divided by it)")
        return values


class ViewConfig(_Section):
    crop_padding: int = Field(4, ge=0, description="Weak view: pad-and-crop translation, pixels.")
    flip: bool = Field(True, description="Horizontal flips; off for data whose labels change under flips (digits).")
    colour: bool = Field(
        True, description="Colour-changing operations: the strong view's AutoContrast, Color, Equalize and Solarize, the "
        "contrastive view's saturation and hue jitter and grayscale; false for classes told apart by colour "
        "(a folder run of colour images decides it from the labelled images)."
    )
    rotate: bool = Field(
        True, description="Strong view: RandAugment's Rotate (up to 30 degrees); false for classes told apart by a "
        "turn that small (directions, dial readings)."
    )
    cutout: float = Field(0.5, ge=0, le=1, description="Strong view: Cutout side as a fraction of the image side.")
    randaugment_ops: int = Field(2, ge=0, description="Strong view: RandAugment operations per image.")
    randaugment_magnitude: int = Field(
        10, ge=1, le=10, description="Strong view: RandAugment magnitude (of 10): the largest one drawn ('fixmatch'), or the fixed level ('comatch'; 10 in the released code)."
    )
    crop_scale_min: float = Field(0.2, gt=0, le=1, description="Contrastive view: smallest random-resized-crop area.")
    jitter_prob: float = Field(0.8, ge=0, le=1, description="Contrastive view: probability of colour jitter (0.4, 0.4, 0.4, 0.1).")
    grayscale_prob: float = Field(0.2, ge=0, le=1, description="Contrastive view: probability of grayscale (0 when colour is false).")
    fill: int = Field(127, ge=0, le=255, description="Fill value of geometric ops and Cutout (0 for digits: black background).")
    weak: Literal["crop", "resized_crop"] = Field(
        "crop", description="Weak view: 'crop' (pad and crop, CIFAR/STL) or 'resized_crop' (random resized crop from crop_scale_min, ImageNet); both flip if 'flip'."
    )
    strong: Literal["fixmatch", "contrastive"] = Field(
        "fixmatch", description="First strong view: 'fixmatch' (weak + RandAugment + Cutout) or 'contrastive' (the contrastive view, as on ImageNet)."
    )
    randaugment: Literal["fixmatch", "comatch"] = Field(
        "fixmatch", description="RandAugment variant of the strong view: 'fixmatch' (magnitude drawn 1..randaugment_magnitude "
        "with a random sign, nearest-neighbour geometry about the centre) or 'comatch' (the released CoMatch CIFAR code: "
        "magnitude fixed at 10, enhance factor 1.9, solarize a no-op, 10 px translations, bilinear geometry, shear about the top-left corner)."
    )
    crop_offsets: Literal["symmetric", "released"] = Field(
        "symmetric", description="Weak-view pad-and-crop shifts: 'symmetric' (-crop_padding..+crop_padding) or 'released' "
        "(-crop_padding..crop_padding-1, as the released CoMatch code draws its crop corner)."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_grayscale_without_colour(cls, raw: Any) -> Any:
        """``colour=false`` turns no image grey, whatever ``grayscale_prob`` says."""
        if isinstance(raw, dict) and raw.get("colour") is False:
            raw = {**raw, "grayscale_prob": 0.0}
        return raw


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
        False, description="timm models: start from timm's pretrained weights, downloaded when the network is reachable, "
        "else from the local cache (HF_HUB_OFFLINE=1: the cache only); a pretrained start needs far fewer labels and steps."
    )
    init_scheme: Literal["project", "released"] = Field(
        "project", description="Random initialisation: 'project' (Kaiming fan_out convolutions, Xavier-normal classifier and "
        "projection head with zero biases) or 'released' (the released code: fan_in convolutions in Wide ResNets, PyTorch's "
        "default nn.Linear init for classifier and head). Ignored for what model.init loads."
    )
    head_activation: Literal["leaky_relu", "relu"] = Field(
        "leaky_relu", description="Non-linearity between the projection head's two layers: leaky_relu (slope 0.1, the released "
        "CIFAR code) or relu (the released ImageNet ResNet-50 head). It shapes the embeddings the graph loss compares."
    )

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        """One of the architectures :mod:`comatch.models` builds (checked before any data loads)."""
        from comatch.models import ARCHITECTURES  # the models' own list; imported here, when validated
        from comatch.models.timm_backbone import is_timm_arch

        if arch not in ARCHITECTURES and not is_timm_arch(arch):
            raise ValueError(f"unknown architecture; choose one of: {', '.join(ARCHITECTURES)}, or a timm model as timm:NAME")
        return arch


class OptimConfig(_Section):
    batch_size: int = Field(16, ge=1, description="Labelled images per step, global (summed over processes).")
    mu: int = Field(7, ge=1, description="Unlabelled images per labelled image in a step (global unlabelled batch: mu * batch_size).")
    iterations: int = Field(2000, ge=1, description="Total training steps K.", json_schema_extra=RESUMABLE)
    lr: float = Field(0.03, gt=0, allow_inf_nan=False, description="Initial learning rate; decays as optim.schedule says.")
    schedule: Literal["cosine", "half_cosine", "epoch_half_cosine"] = Field(
        "cosine", description="Learning-rate decay: 'cosine' (lr * cos(7 pi k / (16 K)) per step, the released CIFAR code), "
        "'half_cosine' (lr * (1 + cos(pi k / K)) / 2 per step, down to 0) or "
        "'epoch_half_cosine' (lr * (1 + cos(pi e / E)) / 2, constant within each epoch e of E, the released ImageNet code)."
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD (Nesterov) momentum.")
    nesterov: bool = Field(True, description="Nesterov momentum.")
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay; which parameters it spares is optim.weight_decay_exempt.")
    weight_decay_exempt: Literal["norm_and_bias", "norm", "none"] = Field(
        "norm_and_bias", description="Parameters spared weight decay: norm_and_bias (normalisation parameters and every bias), "
        "norm (normalisation parameters only, the released CIFAR code) or none (all decayed, the released ImageNet code)."
    )
    ema_decay: float = Field(0.999, ge=0, lt=1, description="Decay of the evaluation EMA of the weights.")
    ema_warmup: bool = Field(True, description="EMA decay warm-up min(decay, (1+k)/(10+k)), so short runs get a useful EMA (the released code: none).")
    ema_buffers: Literal["average", "copy"] = Field(
        "average", description="EMA of BatchNorm running statistics: average them like the weights, or copy the trained "
        "model's (the released code)."
    )

    layer_decay: float | None = Field(
        None, gt=0, le=1, description="Layer-wise learning-rate decay: heads get lr, each earlier encoder block lr * decay^depth "
        "(0.65-0.8 keeps a pretrained backbone's early layers close to their weights); None: one lr for all."
    )


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``15m``, ``2h``, ``1h30m`` or ``1d``.

    Raises:
        ValueError: not such a duration, or not positive.
    """
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", text)
    if not text.strip() or parts is None or not any(parts.groups()):
        raise ValueError(f"cannot read the duration {text!r}; write it like 90s, 15m, 2h or 1h30m")
    seconds = sum(float(v) * unit for v, unit in zip(parts.groups(), (86400, 3600, 60, 1)) if v)
    if seconds <= 0:
        raise ValueError(f"the duration {text!r} must be positive")
    return seconds


def tensorboard_installed() -> bool:
    """Whether the ``tensorboard`` package (the optional extra ``comatch[tensorboard]``) can be imported."""
    from importlib.util import find_spec

    return find_spec("tensorboard") is not None


class RunConfig(_Section):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.", json_schema_extra=RESUMABLE)
    log_every: int = Field(50, ge=1, description="Steps between metrics.jsonl training lines.", json_schema_extra=RESUMABLE)
    eval_every: int = Field(250, ge=1, description="Steps between evaluations of the raw and EMA models.", json_schema_extra=RESUMABLE)
    threads: int | None = Field(None, ge=1, description="CPU threads for the training process; None: PyTorch's default.", json_schema_extra=RESUMABLE)
    checkpoint_every: int = Field(500, ge=1, description="Steps between checkpoints (also written at the end and on SIGTERM/SIGINT).", json_schema_extra=RESUMABLE)
    tensorboard: bool = Field(
        default_factory=lambda: tensorboard_installed(), description="Write TensorBoard scalars to RUN_DIR/tensorboard "
        "(needs pip install 'comatch[tensorboard]'); default: on when TensorBoard is installed.", json_schema_extra=RESUMABLE)
    @field_validator("tensorboard")
    @classmethod
    def _tensorboard_is_there(cls, wanted: bool) -> bool:
        if wanted and not tensorboard_installed():
            raise ValueError("TensorBoard is not installed; pip install 'comatch[tensorboard]', or set run.tensorboard=false "
                             "(metrics.jsonl holds the same numbers)")
        return wanted

    nonfinite: Literal["skip", "stop"] = Field("skip", description="A step with a non-finite loss or gradient: skip it (and count it), or stop the run.", json_schema_extra=RESUMABLE)
    max_bad_steps: int = Field(3, ge=1, description="Stop after this many consecutive non-finite steps, even when skipping.", json_schema_extra=RESUMABLE)
    amp: Literal["auto", "none", "bf16", "fp16"] = Field(
        "auto", description="Mixed precision of the network's forward pass (the CoMatch arithmetic stays float32): bf16, or fp16 with loss scaling; auto: bf16 on CUDA GPUs that support it and on CPUs that compute bf16 natively (AVX-512 BF16, AMX) unless run.numerics=portable, else none.", json_schema_extra=RESUMABLE)
    channels_last: bool | None = Field(None, description="Channels-last memory format for network and images (faster convolutions on GPUs with tensor cores); None: on for CUDA, off on the CPU.", json_schema_extra=RESUMABLE)
    numerics: Literal["fast", "portable"] = Field(
        "fast", description="CPU kernels: fast (the fastest for this CPU; bit-reproducible on one machine) or portable (the same "
        "bits on any x86-64 CPU at the same thread count and torch build, slower; for evidence others rerun). See docs/reproducing.md.")
    deterministic: bool = Field(
        False, description="Deterministic GPU kernels (torch.use_deterministic_algorithms, no cuDNN autotuning): bit-reproducible CUDA runs, at a cost in speed. CPU runs are reproducible without it.", json_schema_extra=RESUMABLE)
    compile: bool = Field(False, description="Run the network under torch.compile: a slower first step (the compilation; a C++ compiler "
                          "on a CPU), faster steps after it. BatchNorm's momentum then stays as the run starts: a budget's refit would recompile.",
                          json_schema_extra=RESUMABLE)
    sync_bn: bool = Field(False, description="Synchronise BatchNorm statistics over all processes (CUDA only with several processes).")
    dist_timeout: int = Field(
        1800, ge=10, description="Seconds a collective waits for the other processes before the run fails (a dead or hung process never hangs the rest forever).", json_schema_extra=RESUMABLE)
    budget: str | None = Field(
        None, description="Wall-clock budget of the whole run, e.g. 15m, 2h or 1h30m (--budget): the number of steps is set from the "
        "step time measured over the first steps (and again from a quarter into the run on), so that training, its learning-rate schedule, "
        "evaluations and the report end within it; a resume keeps that number.", json_schema_extra=RESUMABLE,
    )

    @field_validator("budget", mode="before")
    @classmethod
    def _check_budget(cls, value: Any) -> Any:
        if value is not None:
            parse_duration(str(value))
        return value

    fit_to_length: list[str] = Field(
        default_factory=list, description="Settings that depend on the run's length (model.bn_momentum, optim.ema_decay, run.eval_every, "
        "run.log_every) to choose again once run.budget has fixed the number of steps; set by the automatic defaults of your own folders.",
    )
    report: bool = Field(True, description="When the run finishes, write plots and report.html to the run directory (a few seconds; `comatch report` makes them later).", json_schema_extra=RESUMABLE)
    baseline: bool = Field(
        False, description="At the end, fit logistic regression and kNN on frozen initial features (and on pixels for small images) "
        "of the labelled images and write their test accuracy to baseline.json: shows what the unlabelled data added."
    )
    report_embedding: Literal["pca", "tsne"] = Field("pca", description="2-D map of the test embeddings in the report: pca (instant) or tsne (clearer clusters; tens of seconds on a CPU).", json_schema_extra=RESUMABLE)


def _method_sections() -> dict[str, Any]:
    """One section per method that declares settings (methods may share one), as pydantic fields."""
    sections: dict[str, Any] = {}
    for cls in METHODS.values():
        if cls.section is not None and cls.Settings is not None:
            sections.setdefault(cls.section, (cls.Settings, Field(default_factory=cls.Settings)))
    return sections


class _ConfigBase(_Section):
    preset: str = Field("digits", description="Name of the preset this configuration started from.")
    description: str = Field("", description="One line about the preset (shown by `comatch presets`).", json_schema_extra=RESUMABLE)
    method: Method = Field("comatch", description=f"Training method: {', '.join(METHODS)}.")
    seed: int = Field(0, ge=0, description="Seed of the labelled subset, initialisation, sampling and augmentation.")
    data: DataConfig = DataConfig()
    views: ViewConfig = ViewConfig()
    model: ModelConfig = ModelConfig()

    @model_validator(mode="before")
    @classmethod
    def _fixmatch_section_of_older_configs(cls, raw: Any) -> Any:
        """A fixmatch configuration written before FixMatch had its own section (an older run's
        config.yaml, your own file) kept tau and lambda_u in the ``comatch`` section: without a
        ``fixmatch`` section they are read from there."""
        if isinstance(raw, dict) and raw.get("method") == "fixmatch" and "fixmatch" not in raw \
                and isinstance(raw.get("comatch"), dict):
            raw = {**raw, "fixmatch": {k: raw["comatch"][k] for k in FIXMATCH_FROM_COMATCH if k in raw["comatch"]}}
        return raw

    @model_validator(mode="after")
    def _check_consistency(self) -> "Config":
        METHODS[self.method].check_config(self)  # type: ignore[arg-type]
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
        return self  # type: ignore[return-value]


Config = create_model(  # type: ignore[call-overload]
    "Config",
    __base__=_ConfigBase,
    __doc__="A run's whole configuration: data, views, model, each method's section, optimiser, run.",
    **_method_sections(),
    optim=(OptimConfig, Field(default_factory=OptimConfig)),
    run=(RunConfig, Field(default_factory=RunConfig)),
)


def resumable_fields(model: type[BaseModel] | None = None, prefix: str = "") -> set[str]:
    """Dotted names of the fields marked :data:`RESUMABLE`, found by walking the sections."""
    model = model or Config
    names: set[str] = set()
    for name, info in model.model_fields.items():
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("resumable"):
            names.add(prefix + name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names |= resumable_fields(info.annotation, f"{prefix}{name}.")
    return names


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
        raw = merge(load_preset(preset), {"preset": preset})
    raw = merge(raw, {k: v for k, v in fields.items() if v is not None})
    for assignment in overrides:
        apply_override(raw, assignment)
    config = validate(raw)
    _refuse_other_methods_settings(raw, overrides)
    return config


def _refuse_other_methods_settings(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    """Raise UserError for an override of a section that the run's method does not read (e.g.
    ``comatch.alpha`` in a fixmatch run): training would silently change nothing. A file may
    hold every section (a run's own config.yaml does); only the command line is checked."""
    method = raw.get("method", "comatch")
    if method not in METHODS:
        return  # validation names the unknown method
    own = METHODS[method].section
    others = {m.section for m in METHODS.values() if m.section is not None} - {own}
    for assignment in overrides:
        key, _, value = assignment.partition("=")
        section, _, name = key.partition(".")
        if section not in others:
            continue
        if own == "fixmatch" and section == "comatch" and name in FIXMATCH_FROM_COMATCH:
            raise UserError(f"{key} does not apply to method fixmatch; set fixmatch.{name}={value} instead")
        reads = f"it reads the {own} section" if own else "it has no settings of its own"
        raise UserError(f"{key} does not apply to method {method} ({reads}); drop it, or train with --method {section}")


def validate(raw: dict[str, Any]) -> Config:
    """Validate a raw mapping into a :class:`Config`, turning errors into one-line UserErrors."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err)) from None


def _field_path(loc: tuple[Any, ...]) -> str:
    """The dotted config key of a pydantic error location, without its type tags (``literal[...]``)."""
    return ".".join(str(part) for part in loc if isinstance(part, int) or not any(c in str(part) for c in "[-"))


def describe_validation_error(err: ValidationError) -> str:
    """One line naming the first offending field, its value and what is allowed."""
    errors = err.errors()
    first = errors[0]
    where = _field_path(first["loc"])
    if first["type"] == "extra_forbidden":
        other = other_spelling(where)
        if other is not None:
            return f"unknown config key {where!r}; the field is spelt {other!r}"
        return f"unknown config key {where!r}; list the fields with `comatch train --show-config --describe`"
    # a field of several types (e.g. a name or a list) fails once per type: one message of the alternatives
    alternatives = [e["msg"].removeprefix("Value error, ") for e in errors if _field_path(e["loc"]) == where]
    message = ", or ".join([alternatives[0], *(m.removeprefix("Input should be ") for m in alternatives[1:])])
    if not where:
        return f"invalid configuration: {message}"
    return f"invalid value {first.get('input')!r} for {where}: {message}"


def to_yaml(config: Config, describe: bool = False) -> str:
    """The fully resolved configuration as YAML (what a run directory's config.yaml holds).

    Args:
        config: the configuration.
        describe: put each field's description above it as a ``#`` comment (the YAML reads
            back to the same values).
    """
    values = config.model_dump(mode="json")
    if not describe:
        return yaml.safe_dump(values, sort_keys=False)
    return "\n".join(_described(config, values, "")) + "\n"


def _described(model: BaseModel, values: dict[str, Any], indent: str) -> list[str]:
    """YAML lines of ``values`` (the dump of ``model``), each field under its description as comments."""
    lines: list[str] = []
    fields = type(model).model_fields
    for name, value in values.items():
        info = fields.get(name)
        description = (info.description if info is not None else None) or ""
        lines += [f"{indent}# {line}" for line in textwrap.wrap(description, 96 - len(indent))]
        child = getattr(model, name, None)
        if isinstance(child, BaseModel) and isinstance(value, dict):
            lines.append(f"{indent}{name}:")
            lines += _described(child, value, indent + "  ")
        else:
            dumped = yaml.safe_dump({name: value}, sort_keys=False, width=1000).rstrip("\n")
            lines += [indent + line for line in dumped.splitlines()]
    return lines


def other_spelling(key: str) -> str | None:
    """``key`` with labelled spelt the other way (labeled <-> labelled), if that is a config field."""
    other = key.replace("labelled", "labeled") if "labelled" in key else key.replace("labeled", "labelled")
    if other == key:
        return None
    model: Any = Config
    for part in other.split("."):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return None
        model = fields[part].annotation
    return other
