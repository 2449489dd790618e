"""Files only their owner may read: the SQLite database (password hashes, e-mails, phones) and the
generated development JWT secret (issue 11, row 13).

Modes given to os.open/os.mkdir are filtered by the process umask, so each file or directory made here
is chmod-ed to its mode right after creation: the result is the same under umask 022, 002 or 000. A file
that already exists with group or other permissions (an older version created it 0644) is tightened
when it is ours. An existing directory is never changed: it may be the operator's own (the working
directory, for `sqlite:///auth.db`), and the files inside it are private anyway.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: str | os.PathLike[str]) -> None:
    """Create `path` and any missing parents; each directory created here is mode 0700."""
    missing: list[Path] = []
    current = Path(os.path.abspath(path))
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process: its mode is its creator's business
        os.chmod(directory, DIR_MODE)


def create_private_file(path: str | os.PathLike[str]) -> bool:
    """Create `path` empty and mode 0600 if it does not exist (True), else tighten it (False).

    O_EXCL makes creation and the existence check one step, so two processes never both create it, and
    O_NOFOLLOW refuses a symlink planted where the file should be.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        restrict(path)
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def restrict(path: str | os.PathLike[str]) -> None:
    """Take group and other permissions off an existing regular file of this user; others are left alone.

    Best effort: a file that cannot be changed (immutable, on a read-only mount) is used as it is, and
    whether it is usable at all is for its reader to find out.
    """
    try:
        info = os.stat(path, follow_symlinks=False)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_mode & 0o077:
            os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
    except OSError:
        pass
