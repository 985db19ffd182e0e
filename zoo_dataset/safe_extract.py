"""Zip extraction that refuses archives able to write outside their target directory, to fill it,
or to hold two copies of one file.

Every member is checked before anything is written. Its name is normalised to the one path it
unpacks to (:func:`zoo_dataset.names.archive_path`: ``a/./b`` and ``a//b`` are ``a/b``), and
absolute paths, drive letters, ``..`` components, backslashes, control characters, symlinks (Unix
mode bits in the external attributes), two members that normalise to one name (the second copy
would silently replace the first, e.g. a trial's params.json or checkpoint) and a file that another
member needs as a folder refuse the whole archive; so does an archive whose members would unpack
to more than ``max_bytes`` in all, or expand more than ``max_ratio`` times over their compressed
size (a zip bomb). Members are then written under their normalised names, each file created anew
(``O_EXCL``, never through a link), so a file system that folds names (case, Unicode) cannot merge
two members either. The declared sizes bind: Python's zipfile stops reading a member at its
declared size and checks its CRC.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from .errors import DataFormatError
from .names import archive_path

MAX_BYTES = 64 << 30  # the largest published zoo archives unpack to a few GB
MAX_RATIO = 200  # float checkpoints barely compress; JSON logs ~10x; zip bombs 1000x and more
RATIO_FLOOR = 1 << 20  # members smaller than this are not judged by their ratio
CHUNK = 1 << 20


def oversize_reason(member: zipfile.ZipInfo, max_ratio: float) -> str | None:
    """Why a member expands suspiciously, or None."""
    if member.file_size > RATIO_FLOOR and member.file_size > max_ratio * max(member.compress_size, 1):
        return f"expands {member.file_size / max(member.compress_size, 1):.0f}x, more than {max_ratio:g}x"
    return None


def checked_members(archive: Path, members: list[zipfile.ZipInfo], max_ratio: float) -> dict[str, zipfile.ZipInfo]:
    """Each member by the normalised name it unpacks to; DataFormatError for the first one refused."""
    named: dict[str, zipfile.ZipInfo] = {}
    for member in members:
        try:
            name = archive_path(member.filename)
        except ValueError as exc:
            reason = str(exc)
        else:
            reason = oversize_reason(member, max_ratio)
            if stat.S_ISLNK(member.external_attr >> 16):
                reason = "symbolic link"
            elif name in named:
                first = named[name].filename
                reason = "a second member of that name" + (
                    f": {first!r} unpacks to the same file" if first != member.filename else "")
        if reason:
            raise DataFormatError(f"{archive}: refusing member {member.filename!r} ({reason})")
        named[name] = member
    folders = {str(parent) for name in named for parent in PurePosixPath(name).parents}
    clash = sorted(name for name, member in named.items() if not member.is_dir() and name in folders)
    if clash:
        raise DataFormatError(f"{archive}: refusing member {named[clash[0]].filename!r} (a file, and a folder "
                              "of other members)")
    return named


def safe_extract(archive: Path, target: Path, max_bytes: int = MAX_BYTES, max_ratio: float = MAX_RATIO) -> Path:
    """Extract ``archive`` into ``target`` after checking every member and the total size; returns ``target``."""
    target = Path(target)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            named = checked_members(Path(archive), members, max_ratio)
            total = sum(m.file_size for m in members)
            packed = Path(archive).stat().st_size
            if total > max_bytes or (total > RATIO_FLOOR and total > max_ratio * packed):
                raise DataFormatError(f"{archive}: refusing to unpack {total / 2**30:.2f} GiB from "
                                      f"{packed / 2**20:.1f} MiB (limits: {max_bytes / 2**30:.0f} GiB, "
                                      f"{max_ratio:g}x); unpack it yourself and pass the folder")
            target.mkdir(parents=True, exist_ok=True)
            root = target.resolve()
            for name, member in named.items():
                _extract(zf, member, root, name, archive)
    except zipfile.BadZipFile as exc:
        raise DataFormatError(f"{archive}: not a readable zip file ({exc})") from exc
    return target


def _extract(zf: zipfile.ZipFile, member: zipfile.ZipInfo, root: Path, name: str, archive: Path) -> None:
    """One member at ``root/name``: a folder, or a file that must not exist yet."""
    path = root / name
    if not path.parent.resolve().is_relative_to(root):  # a folder of the target that links elsewhere
        raise DataFormatError(f"{archive}: refusing member {member.filename!r} (lands outside {root})")
    if member.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:  # the file system folded two names into one
        raise DataFormatError(f"{archive}: refusing member {member.filename!r} (this file system stores it "
                              "under the name of another member)") from None
    with zf.open(member) as src, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
