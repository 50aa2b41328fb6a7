"""Checking a large unlabelled folder before training: a fixed sample decoded, the rest sized.

Decoding every file before training finds every unreadable one up front, but costs reading and
decoding all of them: about 120 µs of CPU per 32 px PNG on the 2-core development machine (282
of the 439 s a million-file folder waited for its first step there, under load; larger images
cost more). An unlabelled folder of more than ``sample`` files is checked in three cheaper parts
instead (the labelled, validation and test files are always decoded, all of them):

1. a fixed random sample of ``sample`` files (:func:`~comatch.data.statistics.sample_indices`,
   the same in every run) is decoded and hashed, as a small folder's files are. More than
   :data:`MAX_UNREADABLE` of them unreadable stops the run before training: the folder is
   probably not what was meant, and training would replace files all the way;
2. every other file is sized (a ``stat``, about 3 µs: nothing is read): one that cannot be is
   unreadable;
3. the files whose size a labelled, validation or test file has are read and hashed (about
   20 µs each from the page cache), so that copies of those images are found exactly as in a
   fully checked folder (the same bytes have the same size); no other file can be a copy, and
   none is read. Small PNGs share few sizes, so most are read; camera photos rarely share one.

The files neither decoded nor found unreadable are decoded when training first reads them: one
that fails is replaced by another and counted (:class:`~comatch.data.images.ImageFiles`, the
run's ``data.json`` and ``summary.json``), so every unreadable file is counted either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from comatch.data.images import NOT_DECODED, FileCheck, check_file, check_files, file_size, hash_file, in_threads
from comatch.data.statistics import sample_indices
from comatch.errors import UserError

CHECK_SAMPLE = 20_000
"""Unlabelled files decoded before training, at most (``data.check_sample``)."""
MAX_UNREADABLE = 0.05
"""Largest share of the check sample that may be unreadable before the run stops."""


def check_sampled(paths: Sequence[str], sizes_elsewhere: set[int], sample: int, folder: str) -> list[FileCheck]:
    """The checks of a large folder's files, in the three parts of the module docstring.

    Args:
        paths: the folder's image files.
        sizes_elsewhere: the sizes in bytes of the labelled, validation and test files.
        sample: how many files to decode (fewer than ``len(paths)``).
        folder: the folder, for the message.

    Returns:
        One check per path: decoded (the sample), hashed but not decoded, failed, or
        :data:`~comatch.data.images.NOT_DECODED`.

    Raises:
        UserError: more than :data:`MAX_UNREADABLE` of the sample is unreadable.
    """
    chosen = sample_indices(len(paths), sample)
    checks: list[FileCheck] = [NOT_DECODED] * len(paths)
    for i, check in zip(chosen.tolist(), check_files([paths[i] for i in chosen])):
        checks[i] = check
    _stop_if_mostly_unreadable([checks[i] for i in chosen], [paths[i] for i in chosen], folder)
    outside = np.ones(len(paths), dtype=bool)
    outside[chosen] = False
    rest = np.flatnonzero(outside).tolist()
    to_hash = []
    for i, size in zip(rest, in_threads(file_size, [paths[i] for i in rest])):
        if size < 0:
            checks[i] = check_file(paths[i])  # fails again, saying why
        elif size in sizes_elsewhere:
            to_hash.append(i)
    for i, check in zip(to_hash, in_threads(hash_file, [paths[i] for i in to_hash])):
        checks[i] = check
    return checks


def _stop_if_mostly_unreadable(checks: list[FileCheck], paths: list[str], folder: str) -> None:
    """Raise when more than :data:`MAX_UNREADABLE` of a check sample is unreadable."""
    bad = [i for i, c in enumerate(checks) if not c.ok]
    if len(bad) > MAX_UNREADABLE * len(checks):
        raise UserError(f"{len(bad)} of {len(checks):,} sampled images of the unlabelled folder {folder} cannot be "
                        f"read ({len(bad) / len(checks):.0%}), e.g. {paths[bad[0]]} ({checks[bad[0]].error}); repair "
                        f"or remove them, or set data.check_sample=null to decode every file first and skip the "
                        f"unreadable ones")


def sample_note(checks: list[FileCheck], sample: int) -> str:
    """The run's note on a folder checked on a sample: what was decoded, what was left out."""
    unreadable = sum(not c.ok for c in checks)
    return (f"decoded {sample:,} of the {len(checks):,} unlabelled images before training (a fixed random sample; "
            f"{unreadable} unreadable, left out); the rest are decoded as training reads them, unreadable ones "
            f"replaced and counted in data.json (data.check_sample=null decodes all first)")
