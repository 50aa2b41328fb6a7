"""Process-level helpers: device choice, seeding, atomic file writes, the run-directory lock
and signal handling."""

from __future__ import annotations

import errno
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comatch.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# glibc mallopt parameters (malloc.h) and the values :func:`keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_ALLOCATOR_SETTINGS = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 64 << 20))


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory of freed tensors for the next step.

    A CPU step allocates and frees the same activation tensors every time. With glibc's
    defaults, blocks above 128 KiB (or, once it adapts, some MiB) are mmap-ed and unmapped one
    by one and the top of the heap is trimmed, so every step faults its activations in again
    page by page, in the kernel. Blocks up to 32 MiB now come from the heap (the largest
    threshold glibc accepts), and up to 64 MiB of free memory stays mapped at its top. The
    kernel time and the peak memory this trades are measured in benchmarks/LOG.md. Nothing
    computed changes.

    Does nothing when the environment already tunes the allocator (``GLIBC_TUNABLES`` with
    malloc settings, ``MALLOC_*`` variables, or ``LD_PRELOAD`` of another allocator) or the C
    library is not glibc.

    Returns:
        Whether the settings were applied.
    """
    env = os.environ
    if ("malloc" in env.get("GLIBC_TUNABLES", "") or env.get("LD_PRELOAD")
            or any(k.startswith("MALLOC_") for k in env)):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not Linux with glibc
        return False
    return all(mallopt(param, value) == 1 for param, value in _ALLOCATOR_SETTINGS)


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Write a file atomically: temporary file in the same folder, flush, fsync, rename.

    The file gets the mode a plain ``open(path, "w")`` would give it (``0o666`` less the
    umask), not the ``0o600`` of a temporary file.

    Args:
        path: destination.
        write: callable taking an open binary file object.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``."""
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


LOCK_NAME = ".lock"
OWNER_NAME = ".lock.pid"


class RunLock:
    """An exclusive lock on a run directory, so that two processes never write one run.

    It is a :class:`filelock.FileLock` on ``RUN_DIR/.lock`` (``flock`` on Linux and macOS, a
    ``msvcrt`` lock on Windows): the operating system releases it when the process ends however
    it ends (SIGKILL included), so a killed run never leaves it stuck. ``RUN_DIR/.lock.pid``
    holds the owner's process id, for the message of a refused second process.

    Args:
        run_dir: the run directory (created if missing).
        hint: what to do when the directory cannot be written (ends that message).

    Raises:
        UserError: the directory cannot be created or written (a file is in the way, a
            read-only file system, no permission), or another process holds the lock.
    """

    def __init__(self, run_dir: Path, hint: str = "choose another --out") -> None:
        self.run_dir, self.hint = Path(run_dir), hint
        self._lock: Any = None

    def acquire(self) -> "RunLock":
        """Take the lock (non-blocking); see the class for what it raises."""
        from filelock import FileLock, Timeout

        owner_file = self.run_dir / OWNER_NAME
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(self.run_dir / LOCK_NAME, timeout=0)
            lock.acquire()
        except Timeout:
            owner = _read_owner(owner_file)
            raise UserError(f"{self.run_dir} is in use by another comatch process (pid {owner}); "
                            f"wait for it to end (or stop it), then try again") from None
        except OSError as err:
            raise UserError(f"cannot write the run directory {self.run_dir}: {_reason(err)}; "
                            f"{self.hint}") from None
        try:
            owner_file.write_text(f"{os.getpid()}\n")
        except OSError as err:
            lock.release()
            raise UserError(f"cannot write the run directory {self.run_dir}: {_reason(err)}; "
                            f"{self.hint}") from None
        self._lock = lock
        return self

    def release(self) -> None:
        """Give the lock up."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_owner(path: Path) -> str:
    """The process id in ``path`` ("?" when it cannot be read)."""
    try:
        return (path.read_text(errors="replace").split() or ["?"])[0]
    except OSError:
        return "?"


def usable_cpus() -> int:
    """CPU cores this process may run on: its affinity where the OS has one (Linux), else all cores."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _reason(err: OSError) -> str:
    """What an OSError about a directory means, in words."""
    if isinstance(err, FileExistsError) or err.errno == errno.EEXIST:
        return "a file of that name is in the way"
    if isinstance(err, NotADirectoryError) or err.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a folder"
    return err.strerror or type(err).__name__


