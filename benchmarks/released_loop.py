"""The released CoMatch training script's CIFAR loop, reconstructed for side-by-side time and memory.

The released code cannot be fetched here, so this script rebuilds what decides its speed and its
memory, written from a reading of its behaviour: the same libraries in the main process (torch,
torchvision's transforms, numpy, PIL; OpenCV too when it is installed, which the released
augmentations import), the CIFAR batches read into a list of HWC arrays, two ``DataLoader`` s
(labelled batches of B, unlabelled batches of mu B, both drawn with replacement) with two worker
processes each, producing one weak view of every labelled image and a weak, a RandAugment and a
SimCLR-style view of every unlabelled one; the reference WideResNet with its projection head
(``released_network.py``) and an EMA copy; SGD with Nesterov momentum; and one step as the
released script takes it: all ``B + 3 mu B`` images in one forward, distribution alignment over
the last 32 batches, memory-smoothed pseudo-labels once the bank is filled, the bank update,
the pseudo-label graph and the contrastive loss, the backward, the SGD and EMA updates and the
per-step ``.item()`` meters. It imports nothing from comatch, so OpenMP runs with libgomp's own
wait policy, as under the released code, and the step's arithmetic is written out as the released
script has it rather than taken from ``comatch.methods``: a reference must not share code with
what it is timed against.

What differs from the released code, and why it does not favour this project: the
augmentations run torchvision's PIL transforms where the released code has its own numpy /
OpenCV ones (they run in the workers; the main process's memory does not see them), and no
logger or TensorBoard writer is started (which would only add to the released side).

    python benchmarks/released_loop.py --root DATA --iterations 200 --json out.json

``benchmarks/train_run.py --released`` runs it under the same memory sampler as ``comatch train``
(``--alternate N`` interleaves the two).
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

try:  # the released augmentations import OpenCV in the main process
    import cv2  # noqa: F401
except ImportError:
    cv2 = None

from released_network import ReferenceWideResNet

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def read_cifar10(folder: Path, names: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """Images (a list of ``[32, 32, 3]`` uint8 arrays) and labels of some CIFAR-10 batch files."""
    data, labels = [], []
    for name in names:
        entry = pickle.loads((folder / name).read_bytes(), encoding="latin1")
        data.append(entry["data"])
        labels.append(np.asarray(entry["labels"]))
    flat = np.concatenate(data)  # [N, 3 * 32 * 32]
    return [row.reshape(3, 32, 32).transpose(1, 2, 0) for row in flat], np.concatenate(labels)


def split_labelled(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``per_class`` random labelled images of every class, and of all the others."""
    labelled, unlabelled = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        labelled.append(members[:per_class])
        unlabelled.append(members[per_class:])
    return np.concatenate(labelled), np.concatenate(unlabelled)


class Views(torch.utils.data.Dataset):
    """Images with their label, through one transform or a tuple of them (one view each)."""

    def __init__(self, images: list[np.ndarray], labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i])
        if isinstance(self.transform, tuple):
            return tuple(t(image) for t in self.transform), int(self.labels[i])
        return self.transform(image), int(self.labels[i])


def view_transforms() -> tuple:
    """The weak, RandAugment and SimCLR-style views and the test transform."""
    finish = [transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    shift_flip = [transforms.RandomCrop(32, padding=4, padding_mode="reflect"), transforms.RandomHorizontalFlip()]
    weak = transforms.Compose([*shift_flip, *finish])
    randaugment = transforms.Compose([*shift_flip, transforms.RandAugment(num_ops=2, magnitude=10), *finish])
    simclr = transforms.Compose([
        transforms.RandomResizedCrop(32, scale=(0.2, 1.0)), transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2), *finish])
    return weak, randaugment, simclr, transforms.Compose(finish)


def loader(dataset: Views, batch_size: int, batches: int, workers: int, seed: int) -> torch.utils.data.DataLoader:
    """Batches drawn with replacement, as the released samplers do."""
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=batches * batch_size,
                                             generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                                       num_workers=workers, pin_memory=torch.cuda.is_available())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mu", type=int, default=7)
    parser.add_argument("--labelled", type=int, default=40)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per loader (released: 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the training time, median step and EMA test accuracy here")
    a = parser.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    # hyper-parameters of the released CIFAR script
    temperature, alpha, threshold, contrast_threshold = 0.2, 0.9, 0.95, 0.8
    lam_u = lam_c = 1.0
    ema_m, lr, queue_batches, low_dim, classes = 0.999, 0.03, 5, 64, 10

    folder = a.root / "cifar-10-batches-py"
    images, labels = read_cifar10(folder, [f"data_batch_{i}" for i in range(1, 6)])
    test_images, test_labels = read_cifar10(folder, ["test_batch"])
    lab_idx, unl_idx = split_labelled(labels, a.labelled // classes, rng)
    weak, randaugment, simclr, plain = view_transforms()
    bu = a.batch_size * a.mu
    dl_x = loader(Views([images[i] for i in lab_idx], labels[lab_idx], weak), a.batch_size, a.iterations, a.workers, a.seed)
    dl_u = loader(Views([images[i] for i in unl_idx], labels[unl_idx], (weak, randaugment, simclr)), bu,
                  a.iterations, a.workers, a.seed + 1)
    dl_test = torch.utils.data.DataLoader(Views(test_images, test_labels, plain), batch_size=64, num_workers=a.workers)

    model = ReferenceWideResNet(a.depth, a.width, num_classes=classes, low_dim=low_dim)
    ema = ReferenceWideResNet(a.depth, a.width, num_classes=classes, low_dim=low_dim)
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    decay = [p for n, p in model.named_parameters() if "bn" not in n]
    no_decay = [p for n, p in model.named_parameters() if "bn" in n]
    optimizer = torch.optim.SGD([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                                momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: math.cos(7 * math.pi * k / (16 * a.iterations)))
    queue_size = queue_batches * (a.mu + 1) * a.batch_size
    queue_z, queue_p, queue_at = torch.zeros(queue_size, low_dim), torch.zeros(queue_size, classes), 0
    recent_means: list[torch.Tensor] = []
    meters: list[tuple[float, ...]] = []

    model.train()
    ends = [time.perf_counter()]
    for step, ((x_w, y_x), ((u_w, u_s0, u_s1), _)) in enumerate(zip(dl_x, dl_u)):
        b = x_w.shape[0]
        logits, z = model(torch.cat([x_w, u_w, u_s0, u_s1]))
        logits_x, (logits_uw, logits_us0, _) = logits[:b], logits[b:].split(bu)
        z_x, (z_uw, z_us0, z_us1) = z[:b], z[b:].split(bu)
        loss_x = F.cross_entropy(logits_x, y_x)
        with torch.no_grad():
            probs = torch.softmax(logits_uw, dim=1)  # distribution alignment over the last 32 batches
            recent_means = [*recent_means, probs.mean(0)][-32:]
            probs = probs / torch.stack(recent_means).mean(0)
            probs = probs / probs.sum(1, keepdim=True)
            aligned = probs.clone()
            if step > queue_batches:  # smooth with the memory bank once it has been filled
                affinity = torch.softmax(z_uw @ queue_z.t() / temperature, dim=1)
                probs = alpha * probs + (1 - alpha) * affinity @ queue_p
            confidence, _ = probs.max(1)
            mask = (confidence >= threshold).float()
            n = b + bu
            queue_z[queue_at:queue_at + n] = torch.cat([z_uw.detach(), z_x.detach()])
            queue_p[queue_at:queue_at + n] = torch.cat([aligned, F.one_hot(y_x, classes).float()])
            queue_at = (queue_at + n) % queue_size
        similarity = torch.exp(z_us0 @ z_us1.t() / temperature)
        similarity = similarity / similarity.sum(1, keepdim=True)
        graph = probs @ probs.t()
        graph.fill_diagonal_(1)
        graph = graph * (graph >= contrast_threshold).float()
        graph = graph / graph.sum(1, keepdim=True)
        loss_c = -(torch.log(similarity + 1e-7) * graph).sum(1).mean()
        loss_u = (-(F.log_softmax(logits_us0, dim=1) * probs).sum(1) * mask).mean()
        loss = loss_x + lam_u * loss_u + lam_c * loss_c
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.copy_(p_ema * ema_m + p.detach() * (1 - ema_m))
            for b_ema, b_model in zip(ema.buffers(), model.buffers()):
                b_ema.copy_(b_model)
        meters.append((loss_x.item(), loss_u.item(), loss_c.item(), mask.mean().item()))  # the released meters
        ends.append(time.perf_counter())
    train_seconds = ends[-1] - ends[0]

    ema.eval()
    correct = 0
    with torch.no_grad():
        for x, y in dl_test:
            correct += int((ema(x)[0].argmax(1) == y).sum())
    steps = [t1 - t0 for t0, t1 in zip(ends, ends[1:])]
    result = {"iterations": len(steps), "train_seconds": train_seconds,
              "step_median_s": statistics.median(steps[10:] or steps), "test_accuracy_ema": correct / len(test_labels),
              "opencv_imported": cv2 is not None}
    print(json.dumps(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
