"""Classical baselines on the digits split, for scale: LabelSpreading and logistic regression.

Both see exactly the run's data: the labelled subset that `comatch train --seed S` draws,
the same unlabelled pool (for LabelSpreading), and the same test part.

    python benchmarks/baselines.py --seeds 0 1 2 --labels-per-class 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelSpreading

from comatch.data.digits import load_digits_split
from comatch.data.sampling import select_labelled


def run(seed: int, labels_per_class: int, val_per_class: int = 20) -> dict[str, float]:
    """Test accuracy of both baselines for one seed, and their wall time."""
    split = load_digits_split(val_per_class)
    x = split.train_images.flatten(1).float().numpy() / 255.0
    y = split.train_labels.numpy()
    x_test = split.test_images.flatten(1).float().numpy() / 255.0
    y_test = split.test_labels.numpy()
    labelled = select_labelled(y, labels_per_class, seed)
    start = time.perf_counter()
    targets = np.full_like(y, -1)
    targets[labelled] = y[labelled]
    spreading = LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.2, max_iter=100).fit(x, targets)
    spreading_acc = float((spreading.predict(x_test) == y_test).mean())
    logistic = LogisticRegression(max_iter=2000).fit(x[labelled], y[labelled])
    logistic_acc = float((logistic.predict(x_test) == y_test).mean())
    return {"label_spreading": spreading_acc, "logistic_regression": logistic_acc,
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels-per-class", type=int, default=4)
    args = parser.parse_args()
    results = [run(seed, args.labels_per_class) for seed in args.seeds]
    for name in ("label_spreading", "logistic_regression"):
        values = [r[name] for r in results]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name}: {statistics.mean(values):.2%} +- {spread:.2%}  ({', '.join(f'{v:.2%}' for v in values)})")


if __name__ == "__main__":
    main()
