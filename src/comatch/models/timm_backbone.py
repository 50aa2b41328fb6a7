"""Backbones from timm (``model.arch=timm:NAME`` or ``timm/NAME``), an optional extra.

A timm model built with ``num_classes=0`` returns its pooled features ``[N, num_features]``;
:class:`TimmEncoder` wraps it as ``.net`` (so a timm or torchvision ``state_dict`` given as
``model.init`` loads through :func:`comatch.models.pretrained.load_encoder_weights`) and
exposes ``feature_dim``, to which CoMatch's classifier and projection head attach.

Weights come from ``model.init`` (a local file) or, with ``model.pretrained=true``, the way
timm users expect: timm downloads them (Hugging Face Hub, or torch.hub for URL weights) when
the network is reachable and reads its local cache when it is not, or with ``HF_HUB_OFFLINE=1``.

A pretrained backbone expects its own input size and normalisation; :func:`backbone_data_defaults`
turns timm's ``pretrained_cfg`` into ``data.image_size``, ``data.mean`` and ``data.std`` for the
fields the user left unset.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from comatch.errors import UserError

PREFIXES = ("timm:", "timm/")
"""How ``model.arch`` names a timm model: ``timm:resnet18`` or ``timm/resnet18``."""
INSTALL_HINT = "install the optional extra: pip install 'comatch[timm]'"


def is_timm_arch(arch: str) -> bool:
    """Whether ``arch`` names a timm model (``timm:NAME`` or ``timm/NAME``)."""
    return arch.startswith(PREFIXES)


def timm_name(arch: str) -> str:
    """The timm model name in ``arch`` (``timm:resnet18`` -> ``resnet18``).

    Raises:
        UserError: ``arch`` has no name after the prefix.
    """
    name = arch[len("timm:"):] if arch.startswith(PREFIXES) else arch
    if not name:
        raise UserError(f"model.arch={arch!r} names no timm model; write e.g. model.arch=timm:resnet18")
    return name


def import_timm() -> Any:
    """The ``timm`` module.

    Raises:
        UserError: timm is not installed.
    """
    try:
        import timm
    except ImportError:
        raise UserError(f"model.arch names a timm model but timm is not installed; {INSTALL_HINT}") from None
    return timm


def _check_known(timm: Any, name: str) -> None:
    """Raise a UserError when timm has no model called ``name``."""
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UserError(f"timm has no model {name!r}{hint}; list them with python -c \"import timm; "
                        f"print(timm.list_models('*resnet*'))\"")


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Block every download timm could start: Hugging Face Hub offline, torch.hub URLs refused.

    Yields:
        Nothing; inside the block only files already in the local caches are read.
    """
    import torch.hub

    saved_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants = None
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants as hub_constants  # read at import: patch too
    saved_flag = getattr(hub_constants, "HF_HUB_OFFLINE", None)
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    saved_download = torch.hub.download_url_to_file

    def refuse(url: str, *args: Any, **kwargs: Any) -> None:
        raise OSError(f"download of {url} refused (local cache only)")

    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = saved_download
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


class TimmEncoder(nn.Module):
    """A timm backbone returning pooled features.

    Args:
        name: timm model name (``resnet18``, ``vit_small_patch16_224.dino``, ...).
        in_channels: image channels (timm adapts a pretrained first layer to 1 channel).
        bn_momentum: BatchNorm momentum for every BatchNorm layer; None keeps timm's.
        pretrained: timm's pretrained weights (downloaded, or from the local cache).

    Attributes:
        net: the timm model (``num_classes=0``: ``forward`` gives ``[N, feature_dim]``).
        feature_dim: size of the pooled features.

    Raises:
        UserError: timm missing, unknown model name, or pretrained weights neither downloadable nor cached.
    """

    def __init__(self, name: str, in_channels: int = 3, bn_momentum: float | None = None,
                 pretrained: bool = False) -> None:
        super().__init__()
        timm = import_timm()
        _check_known(timm, name)
        self.name = name
        if pretrained:
            self.net = _create_pretrained(timm, name, in_channels)
        else:
            self.net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)
        self.feature_dim = int(self.net.num_features)
        if bn_momentum is not None:
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.momentum = float(bn_momentum)

    def forward(self, x: Any) -> Any:
        """Pooled features ``[N, feature_dim]`` of images ``[N, C, H, W]``."""
        return self.net(x)


def weight_caches() -> str:
    """Where timm keeps downloaded weights: the Hugging Face Hub cache, and torch.hub's for URL weights."""
    import torch.hub

    places = []
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants as hub_constants

        places.append(str(hub_constants.HF_HUB_CACHE))
    places.append(os.path.join(torch.hub.get_dir(), "checkpoints"))
    return " and ".join(places)


def _offline() -> bool:
    """Whether the Hugging Face Hub is set offline (``HF_HUB_OFFLINE=1``)."""
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants as hub_constants

        return bool(hub_constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:100]


def _create_pretrained(timm: Any, name: str, in_channels: int) -> nn.Module:
    """``timm.create_model(name, pretrained=True)`` the way timm does it.

    First timm's own path (the Hugging Face Hub, or the model's URL through torch.hub): it
    downloads the weights when the network is reachable and reads its cache otherwise (with
    ``HF_HUB_OFFLINE=1``, the cache only). If that fails, the local caches alone are tried
    with every download blocked.

    Raises:
        UserError: one line naming the model and the caches, when neither works.
    """
    create = lambda: timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_channels)  # noqa: E731
    try:
        return create()
    except Exception as err:  # noqa: BLE001 -- hub, torch.hub and timm raise many kinds
        reason = _first_line(err)
    if not _offline():
        try:
            with no_downloads():
                return create()
        except Exception:  # noqa: BLE001 -- as above; the first reason is the one to show
            pass
    how = ("HF_HUB_OFFLINE=1 allows no download: unset it where the network is reachable"
           if _offline() else "run once where the network is reachable")
    raise UserError(
        f"model.pretrained: the weights of timm model {name!r} could not be downloaded and are not in the local "
        f"cache ({weight_caches()}): {reason}; {how}, or give a weights file as model.init=FILE") from None


@dataclass(frozen=True)
class BackboneData:
    """What a timm backbone expects of its input (from its ``pretrained_cfg``).

    Attributes:
        image_size: side length of its input, pixels.
        mean, std: per-channel (RGB) normalisation, in [0, 1].
        interpolation: resampling its weights were trained with (reported, not applied).
    """

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str


def backbone_data(arch: str) -> BackboneData:
    """Input size and normalisation a timm model expects (ImageNet's when it records none).

    Raises:
        UserError: timm missing or unknown model.
    """
    timm = import_timm()
    name = timm_name(arch)
    _check_known(timm, name)
    config = timm.data.resolve_data_config({}, pretrained_cfg=_pretrained_cfg(timm, name))
    return BackboneData(int(config["input_size"][-1]), tuple(float(v) for v in config["mean"]),
                        tuple(float(v) for v in config["std"]), str(config.get("interpolation", "bilinear")))


def _pretrained_cfg(timm: Any, name: str) -> dict[str, Any]:
    """The model's pretrained configuration as a dict (empty if timm has none)."""
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def backbone_data_defaults(config: Any) -> tuple[Any, list[str]]:
    """``config`` with the timm backbone's input size and normalisation where the user set none.

    Fills ``data.image_size``, ``data.mean`` and ``data.std`` when they are None, and
    ``data.channels`` / ``model.in_channels`` with 3 when None (pretrained backbones take RGB;
    grayscale files are replicated). With ``data.channels=1`` set by the user the mean and
    std become the average of the RGB values. A non-timm ``model.arch`` returns ``config``.

    Args:
        config: a :class:`comatch.config.Config`.

    Returns:
        ``(config, notes)``: the (copied) configuration and one line per field it set.

    Raises:
        UserError: timm missing or unknown model.
    """
    if not is_timm_arch(config.model.arch):
        return config, []
    wanted = backbone_data(config.model.arch)
    data, model = config.data, config.model
    channels = data.channels or 3
    average = lambda values: [sum(values) / len(values)] if channels == 1 else list(values)  # noqa: E731
    data_update: dict[str, Any] = {}
    if data.image_size is None:
        data_update["image_size"] = wanted.image_size
    if data.channels is None:
        data_update["channels"] = 3
    if data.mean is None:
        data_update["mean"] = average(wanted.mean)
    if data.std is None:
        data_update["std"] = average(wanted.std)
    model_update = {"in_channels": 3} if model.in_channels is None and channels == 3 else {}
    if not data_update and not model_update:
        return config, []
    notes = [f"data.{key}={value} from timm model {timm_name(model.arch)!r} "
             f"(its pretrained input; interpolation {wanted.interpolation})" for key, value in data_update.items()]
    new = config.model_copy(update={"data": data.model_copy(update=data_update),
                                    "model": model.model_copy(update=model_update)})
    return new, notes
