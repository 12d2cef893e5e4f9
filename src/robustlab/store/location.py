"""Where a store lives: a path or SQLAlchemy URL made safe to open, to show and to report.

- :func:`resolve` turns a location into the URL to connect with. For a file path it creates the
  missing folders (``0700``) and the store file itself (``0600``; SQLite gives its ``-wal`` and
  ``-shm`` files the mode of the database file), so results are readable by their owner only. An
  existing file keeps its mode. A parent that is a file, a folder given as the store, or a folder
  that cannot be written to is a :class:`~robustlab.core.errors.StoreError` naming the path, and
  nothing is created.
- :func:`masked` is the only form of a URL that robustlab prints, logs or writes: the password
  (and any password-like query parameter) becomes ``***``.
- :func:`one_line` makes a driver's error (often several lines, sometimes quoting the connection
  string) one line without credentials.

Example::

    masked("postgresql+psycopg://bob:s3cret@db/runs")   # 'postgresql+psycopg://bob:***@db/runs'
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from robustlab.core.errors import StoreError

_SECRET_KEYS = re.compile(r"pass|secret|token|key", re.IGNORECASE)


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


def masked(url: str) -> str:
    """``url`` with its password and password-like query values replaced by ``***``."""
    if not is_url(url):
        return url
    try:
        u = sa.make_url(url)
    except (ArgumentError, ValueError):  # unparsable: hide what sits between '//user:' and '@'
        return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)
    query = {k: ("***" if _SECRET_KEYS.search(k) else v) for k, v in u.query.items()}
    return u.set(query=query).render_as_string(hide_password=True)


def one_line(message: object, url: str | None = None) -> str:
    """A (driver) error message as one line, with the URL's password removed if it appears."""
    text = "; ".join(s.strip() for s in str(message).splitlines() if s.strip())
    if url and is_url(url):
        try:
            password = sa.make_url(url).password
        except (ArgumentError, ValueError):
            password = None
        if password:
            text = text.replace(str(password), "***")
    return text


def resolve(location: str | Path) -> str:
    """The SQLAlchemy URL of ``location``; a file path gets its folders and a private file."""
    s = str(location)
    if is_url(s):
        return s
    if not s.strip():
        raise StoreError("store path is empty; give a file path or a SQLAlchemy URL")
    p = Path(s).expanduser().absolute()
    if p.is_dir():
        raise StoreError(f"store {p} is a folder; give the path of a file (e.g. {p / 'store.db'})")
    _private_folders(p.parent, f"store {p}")
    if not p.exists():
        try:
            os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:  # another process created it meanwhile: theirs is as good
            pass
        except OSError as e:
            raise StoreError(f"cannot create store {p}: {_why(e, p.parent)}") from None
    return f"sqlite:///{p}"


def _private_folders(folder: Path, what: str) -> None:
    """Create ``folder`` and its missing parents with mode 0700 (existing ones are untouched);
    errors name ``what`` needs them (e.g. ``store /x/s.db``)."""
    missing = []
    for d in (folder, *folder.parents):
        if d.is_dir():
            break
        if d.exists() or d.is_symlink():
            raise StoreError(f"cannot create {what}: {d} is a file, not a folder")
        missing.append(d)
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            if not d.is_dir():
                raise StoreError(f"cannot create {what}: {d} is a file, not a folder") from None
        except OSError as e:
            raise StoreError(f"cannot create {what}: {_why(e, d.parent)}") from None


def _why(e: OSError, parent: Path) -> str:
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{parent} is not writable"
    if e.errno == errno.ENOTDIR:
        return f"a part of {parent} is a file, not a folder"
    return e.strerror or str(e)


def writable_folder(folder: str | Path, what: str = "folder") -> Path:
    """``folder``, created (``0700``) if missing, after checking that files can be written in it;
    else a :class:`~robustlab.core.errors.StoreError` naming it (checked before a run starts)."""
    p = Path(folder).expanduser().absolute()
    _private_folders(p, f"{what} {p}")
    try:
        tempfile.TemporaryFile(dir=p).close()
    except OSError as e:
        raise StoreError(f"{what} {p} is not writable ({e.strerror or e})") from None
    return p


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (``0600``, also when replacing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def missing_folders(folder: str | Path) -> list[Path]:
    """The folders that creating ``folder`` would create, deepest first (to undo it)."""
    p = Path(folder).expanduser().absolute()
    out = []
    for d in (p, *p.parents):
        if d.exists() or d.is_symlink():
            break
        out.append(d)
    return out
