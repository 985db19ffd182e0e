"""Every path a store names must stay inside it: zoo names and manifest entries are checked here.

A manifest comes from a builder, a mirror or the Hub, so its ``file`` and ``states_file`` entries
are untrusted input: each must be a relative path without ``..`` that resolves inside the store
(symbolic links included). A zoo name becomes a folder under a root, so it must be one plain path
component. Builders, downloads and readers all call these functions before they touch a file, and
writers check with :func:`check_writable` that no linked folder leads their writes out of the store
and with :func:`check_not_linked` that the store's folder itself is no link.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from ..errors import StoreError, ZooNameError

ZOO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_zoo_name(name: object) -> str:
    """``name`` as a zoo name (one folder under a root); raises ZooNameError for '', paths, '..'."""
    if not isinstance(name, str) or not ZOO_NAME.fullmatch(name) or ".." in name:
        raise ZooNameError(
            f"zoo name {name!r} is not a plain name (letters, digits, '.', '_', '-'; no '/', no '..')"
        )
    return name


def check_relative(relative: object, what: str = "path") -> str:
    """A manifest entry's form alone: a non-empty relative path, no '..', no drive, no backslash."""
    if not isinstance(relative, str) or not relative or "\\" in relative or "\0" in relative:
        raise StoreError(f"{what} {relative!r} is not a relative path inside the store; refusing the store")
    parts = PurePosixPath(relative).parts
    if relative.startswith("/") or ".." in parts or (parts and parts[0].endswith(":")):
        raise StoreError(f"{what} {relative!r} points outside the store; refusing the store")
    return relative


def inside(root: Path, relative: object, what: str = "path") -> Path:
    """``root / relative`` after checking that its folder lies inside ``root``; else StoreError.

    Folders are resolved (a linked folder cannot lead out); the file itself may be a link, as the
    Hub route links files into the Hub cache. Writers replace files by rename, never through a link.
    """
    path = Path(root) / check_relative(relative, what)
    if not path.parent.resolve().is_relative_to(Path(root).resolve()):
        raise StoreError(f"{what} {relative!r} resolves outside {root} (a linked folder?); refusing the store")
    return path


def check_writable(zoo_dir: Path) -> Path:
    """``zoo_dir`` if a writer may write into it: the readers' rule (:func:`inside`) for every
    folder it holds, so no linked folder (``vd/``, ``data/``, ``_staging/``...) leads a write out
    of the store; else StoreError. Files may be links (a Hub store's are); writers replace a
    file by rename, never through its link. Every writer calls it before its first write."""
    zoo_dir = Path(zoo_dir)
    if not zoo_dir.exists():
        return zoo_dir
    root = zoo_dir.resolve()
    for folder, subfolders, files in os.walk(zoo_dir):  # links are listed, never descended into
        for name in subfolders:
            path = Path(folder) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise StoreError(f"{path} is a link to {path.resolve()}, outside the store {zoo_dir}; writers "
                                 "refuse it (replace the link by the folder itself)")
        for name in files:  # a dangling link is listed as a file: a writer would stumble on it later
            path = Path(folder) / name
            if path.is_symlink() and not path.exists():
                raise StoreError(f"{path} is a link to {os.readlink(path)}, which does not exist; writers "
                                 "refuse it (remove the link or restore its target)")
    return zoo_dir


def check_not_linked(folder: Path) -> Path:
    """``folder`` if it is not a symbolic link; else StoreError. A writer's own folder (a store
    ``ROOT/<zoo>``, a mirror's ``M/<zoo>``, a card copy's ``D/<zoo>``) is never written through a
    link: one planted there would send every file to wherever it points. The folders a user names
    (``--root``, ``--mirror``, ``--cards-dir``) may be links; they are the user's choice."""
    folder = Path(folder)
    if folder.is_symlink():
        raise StoreError(f"{folder} is a link to {os.readlink(folder)}; writers never write through a linked "
                         f"store folder (give the folder it links to as the path, or its parent as the root)")
    return folder
