"""Checking an output file before any work is done (so that a long ranking or export does not end
in "cannot write")."""

from __future__ import annotations

from pathlib import Path

from comatch.errors import UserError


def writable_file(path: Path, flag: str, example: str) -> None:
    """Check, before any work, that ``path`` can be written as a file.

    Args:
        path: the file to write.
        flag: the option that named it (for messages).
        example: a file name to suggest when ``path`` is a folder.

    Raises:
        UserError: ``path`` is a folder, or it (or its folder) cannot be created or written.
    """
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name, e.g. {path / example}")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):
            pass
    except OSError as err:
        raise UserError(f"cannot write {flag} {path}: {err.strerror}; choose a writable place") from None
    if not existed:
        path.unlink()
