"""Export a checkpoint as a self-contained classifier: TorchScript or ONNX.

The exported model takes a batch of images as they come from a decoder, uint8
``[N, C, S, S]`` (values 0-255), and returns class probabilities ``[N, num_classes]``:
normalisation and softmax are inside the graph. ``FILE.json`` beside it holds the class
names, the input contract and the decoding steps (shorter side resized to ``S``, centre crop)
that turn an image file into that input. Before the export is reported as done, the written
file is loaded back and compared with the PyTorch model on sample inputs.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from comatch.data.images import pipeline_description
from comatch.errors import UserError
from comatch.tools.inference.checkpoint import LoadedModel

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
TOLERANCE = 1e-4  # largest |probability difference| accepted between export and PyTorch


class ExportCheckFailed(UserError):
    """The exported file does not reproduce the PyTorch model; it has been removed."""

    exit_code = 1


class ProbabilityModel(nn.Module):
    """``uint8 [N, C, S, S] -> probabilities [N, num_classes]``: normalise, classify, softmax.

    Args:
        model: returns ``(logits, z)``.
        mean, std: per-channel statistics in [0, 1] (one value is repeated for every channel).
        channels: ``C``.
        temperature: ``T`` of the calibration (1.0: the raw softmax).
    """

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], channels: int,
                 temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = float(temperature)  # calibrated probabilities: softmax(logits / T)
        if len(mean) != channels:
            mean, std = mean * channels, std * channels
        self.model = model
        self.register_buffer("mean", torch.tensor(mean[:channels]).view(1, -1, 1, 1) * 255)  # [1, C, 1, 1]
        self.register_buffer("std", torch.tensor(std[:channels]).view(1, -1, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: ``images`` uint8 ``[N, C, S, S]``. Returns: probabilities ``[N, num_classes]``."""
        logits, _ = self.model((images.float() - self.mean) / self.std)  # [N, num_classes]
        return torch.softmax(logits / self.temperature, dim=1)


def sample_inputs(loaded: LoadedModel, batch: int, seed: int) -> torch.Tensor:
    """Random uint8 images ``[batch, C, S, S]`` in the model's input format."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, loaded.channels, loaded.image_size, loaded.image_size)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def default_output(loaded: LoadedModel, fmt: str) -> Path:
    """``RUN_DIR/export/model.pt`` (TorchScript) or ``.onnx`` beside the checkpoint's run."""
    folder = loaded.path.parent
    if folder.name == "checkpoints":
        folder = folder.parent
    return folder / "export" / f"model{FORMATS[fmt]}"


def _save_torchscript(wrapper: nn.Module, example: torch.Tensor, out: Path) -> Callable[[torch.Tensor], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still supported
        torch.jit.trace(wrapper, example).save(str(out))
        reloaded = torch.jit.load(str(out), map_location="cpu")
    return lambda x: reloaded(x).detach().numpy()


def _onnxruntime() -> Any:
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise UserError(f"ONNX export needs onnx, onnxscript and onnxruntime ({err.name} is missing): "
                        "pip install 'comatch[export]'") from None
    return onnxruntime


def _save_onnx(wrapper: nn.Module, example: torch.Tensor, out: Path) -> Callable[[torch.Tensor], np.ndarray]:
    ort = _onnxruntime()
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(out), input_names=["images"], output_names=["probabilities"],
                          dynamic_shapes={"images": {0: batch}}, dynamo=True, external_data=False, verbose=False)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x.numpy()})[0]


def metadata(loaded: LoadedModel, fmt: str, max_diff: float) -> dict[str, Any]:
    """What ``FILE.json`` holds: classes, input contract, preprocessing and provenance.

    ``preprocessing`` lists the steps of :func:`comatch.data.images.decode_image` (the
    decoding every training, evaluation and prediction image goes through) that turn a file
    into the model's uint8 input, then the normalisation the model does itself.
    """
    c, s = loaded.channels, loaded.image_size
    return {
        "format": fmt,
        "class_names": loaded.class_names,
        "input": {"name": "images", "dtype": "uint8", "layout": "NCHW", "shape": ["N", c, s, s],
                  "channels": c, "color": "grayscale" if c == 1 else "RGB", "size": s, "value_range": [0, 255]},
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["N", len(loaded.class_names)]},
        "preprocessing": {**pipeline_description(s, c),
                          "mean": list(loaded.mean), "std": list(loaded.std), "units": "[0, 1]",
                          "inside_model": "x = (images / 255 - mean) / std, then softmax(logits / temperature)"},
        "calibration": {"temperature": loaded.temperature,
                        "calibrated": loaded.temperature != 1.0},
        "source": {"checkpoint": str(loaded.path), "step": loaded.step, "weights": loaded.weights,
                   "arch": loaded.config.model.arch},
        "check": {"max_abs_diff": max_diff, "tolerance": TOLERANCE},
    }


def export_model(loaded: LoadedModel, fmt: str, out: Path | None = None) -> tuple[Path, Path]:
    """Export ``loaded`` and check the written file against PyTorch.

    Args:
        loaded: the model (moved to the CPU for the export).
        fmt: ``"torchscript"`` or ``"onnx"``.
        out: the model file; default :func:`default_output`.

    Returns:
        ``(model file, metadata file FILE.json)``.

    Raises:
        UserError: unknown format, or ONNX packages missing.
        ExportCheckFailed: the export's probabilities differ from PyTorch's by more than
            :data:`TOLERANCE` (the file is removed).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose torchscript or onnx")
    out = Path(out) if out is not None else default_output(loaded, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ProbabilityModel(loaded.model, loaded.mean, loaded.std, loaded.channels, loaded.temperature).cpu().eval()
    save = _save_torchscript if fmt == "torchscript" else _save_onnx
    run_export = save(wrapper, sample_inputs(loaded, 2, seed=0), out)
    checks = [sample_inputs(loaded, n, seed=n) for n in (1, 3, 8)]  # other batch sizes than the example
    with torch.no_grad():
        diffs = [float(np.abs(run_export(x) - wrapper(x).numpy()).max()) for x in checks]
    if not max(diffs) <= TOLERANCE:
        out.unlink(missing_ok=True)
        raise ExportCheckFailed(f"the {fmt} export differs from the PyTorch model by {max(diffs):.3g} "
                                f"(> {TOLERANCE}); nothing was written. Please report this with your checkpoint")
    info = out.with_name(out.name + ".json")
    info.write_text(json.dumps(metadata(loaded, fmt, max(diffs)), indent=2) + "\n")
    return out, info
