"""Matplotlib drawings of the report: curves, confusion matrix, embedding map.

Figures are drawn with the Agg canvas directly (no pyplot, no display, no global state), so
they work in training processes, on servers and in threads.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Series = tuple[list[int], list[float]]
"""``(steps, values)`` of one curve."""

DPI = 110


@dataclass
class Panel:
    """One set of axes: curves sharing a y-axis.

    Attributes:
        title: axes title.
        ylabel: y-axis label.
        lines: curve label -> ``(steps, values)``; NaN values leave gaps.
        ylim: fixed y-range, or None to fit the data.
    """

    title: str
    ylabel: str
    lines: dict[str, Series] = field(default_factory=dict)
    ylim: tuple[float, float] | None = None


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def figure_seconds() -> float:
    """Seconds to draw and save one report figure here and now (a panel of two 500-point
    curves, to memory): what a report's figures cost on this machine at this moment."""
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.subplots()
    steps = np.arange(500)
    t0 = time.perf_counter()
    ax.plot(steps, np.sin(steps / 50.0), label="one")
    ax.plot(steps, np.cos(steps / 50.0), label="two")
    ax.legend()
    ax.set_title("timing")
    FigureCanvasAgg(fig)
    fig.savefig(io.BytesIO(), format="png", dpi=DPI)
    return time.perf_counter() - t0


def draw_panels(panels: Sequence[Panel], path: Path, title: str = "") -> Path:
    """Draw ``panels`` side by side against the training step; write a PNG.

    Args:
        panels: at least one panel.
        path: the PNG to write.
        title: figure title.

    Returns:
        ``path``.
    """
    fig = Figure(figsize=(5.2 * len(panels), 3.8), layout="constrained")
    for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for label, (steps, values) in panel.lines.items():
            marker = "o" if len(steps) <= 30 else None
            ax.plot(steps, values, label=label, marker=marker, markersize=3, linewidth=1.4)
        ax.set_title(panel.title)
        ax.set_xlabel("step")
        ax.set_ylabel(panel.ylabel)
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        ax.grid(alpha=0.3)
        if panel.lines:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def draw_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str) -> Path:
    """Draw a confusion matrix (rows: true class, columns: predicted); colour is the row share.

    Counts are written in the cells for up to 20 classes, names on the axes for up to 50.
    """
    counts = np.asarray(matrix, dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # [C, C], rows sum to 1
    n = len(class_names)
    side = min(3.0 + 0.35 * n, 14)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    if n <= 50:
        ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), class_names)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize="small",
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _save(fig, path)


def embedding_2d(z: np.ndarray, method: str, max_points: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D map of embeddings ``z [N, D]`` by PCA or t-SNE, on at most ``max_points`` rows.

    t-SNE needs more points than its perplexity: 4 points or fewer get PCA; fewer than 2 (or
    1-D embeddings) all lie at the origin.

    Args:
        z: embeddings.
        method: ``"pca"`` or ``"tsne"``.
        max_points: larger sets are subsampled (uniformly, with ``seed``) to keep t-SNE fast.
        seed: subsampling and t-SNE seed.

    Returns:
        ``(points [n, 2], rows of z used [n])``.

    Raises:
        ValueError: unknown method.
    """
    rows = np.arange(len(z))
    if len(z) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(len(z), max_points, replace=False))
    sample = np.asarray(z, dtype=np.float32)[rows]  # [n, D]
    if method not in ("pca", "tsne"):
        raise ValueError(f"unknown embedding map {method!r}; choose pca or tsne")
    if len(sample) < 2 or sample.shape[1] < 2:  # nothing to project: every point at the origin
        return np.zeros((len(sample), 2), np.float32), rows
    if method == "pca" or len(sample) <= 4:  # t-SNE needs a perplexity below the number of points
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(sample), rows
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(sample) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(sample), rows


def draw_embedding(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> Path:
    """Scatter ``points [n, 2]`` coloured by class; a legend for up to 20 classes."""
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.subplots()
    n = len(class_names)
    cmap, slots = ("tab10", 10) if n <= 10 else ("tab20", 20) if n <= 20 else ("turbo", n)
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=slots - 0.5,
                         s=9, alpha=0.8, linewidths=0)
    if n <= 20:
        handles = [ax.scatter([], [], color=scatter.cmap(scatter.norm(i)), s=20, label=name)
                   for i, name in enumerate(class_names)]
        ax.legend(handles=handles, fontsize="small", markerscale=1.2, loc="best", title="class")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return _save(fig, path)


def _show(ax, image: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """A uint8 ``[C, H, W]`` image on ``ax``, grey for one channel, without axes."""
    pixels = np.transpose(image, (1, 2, 0))
    if pixels.shape[2] == 1:
        ax.imshow(pixels[:, :, 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(pixels)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_image_rows(rows: Sequence[Sequence[np.ndarray]], column_titles: Sequence[str], row_titles: Sequence[str],
                    path: Path, title: str) -> Path:
    """A grid of uint8 images ``[C, H, W]``, one row per entry of ``rows``, titled by column and row.

    Args:
        rows: the images of each row (all rows as long as ``column_titles``).
        column_titles: a title above each column.
        row_titles: a label left of each row.
        path: the PNG to write.
        title: figure title.
    """
    cols = len(column_titles)
    fig = Figure(figsize=(1.25 * cols + 0.8, 1.3 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            _show(axes[r][c], image)
            if r == 0:
                axes[r][c].set_title(column_titles[c], fontsize=8)
        axes[r][0].set_ylabel(row_titles[r], fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
