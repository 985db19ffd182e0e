"""Zip extraction that refuses archives able to write outside their target directory, or to fill it.

Every member is checked before anything is written: absolute paths, drive letters, ``..``
components, symlinks (Unix mode bits in the external attributes) and a name that occurs twice (the
second copy would silently replace the first, e.g. a trial's params.json) refuse the whole archive, and
so does an archive whose members would unpack to more than ``max_bytes`` in all, or expand more
than ``max_ratio`` times over their compressed size (a zip bomb). The declared sizes bind: Python's
zipfile stops reading a member at its declared size and checks its CRC.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from .errors import DataFormatError

MAX_BYTES = 64 << 30  # the largest published zoo archives unpack to a few GB
MAX_RATIO = 200  # float checkpoints barely compress; JSON logs ~10x; zip bombs 1000x and more
RATIO_FLOOR = 1 << 20  # members smaller than this are not judged by their ratio


def unsafe_reason(member: zipfile.ZipInfo) -> str | None:
    """Why a member may not be extracted, or None when it is a plain file or folder inside the target."""
    name = member.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and parts[0].endswith(":")):
        return "absolute path"
    if ".." in parts:
        return "'..' path traversal"
    if stat.S_ISLNK(member.external_attr >> 16):
        return "symbolic link"
    return None


def oversize_reason(member: zipfile.ZipInfo, max_ratio: float) -> str | None:
    """Why a member expands suspiciously, or None."""
    if member.file_size > RATIO_FLOOR and member.file_size > max_ratio * max(member.compress_size, 1):
        return f"expands {member.file_size / max(member.compress_size, 1):.0f}x, more than {max_ratio:g}x"
    return None


def safe_extract(archive: Path, target: Path, max_bytes: int = MAX_BYTES, max_ratio: float = MAX_RATIO) -> Path:
    """Extract ``archive`` into ``target`` after checking every member and the total size; returns ``target``."""
    target = Path(target)
    root = target.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            seen: set[str] = set()
            for member in members:
                name = member.filename.replace("\\", "/").rstrip("/")
                reason = unsafe_reason(member) or oversize_reason(member, max_ratio)
                if reason is None and name in seen:
                    reason = "a second member of that name"
                seen.add(name)
                if reason is None and not (root / member.filename).resolve().is_relative_to(root):
                    reason = f"lands outside {target}"
                if reason:
                    raise DataFormatError(f"{archive}: refusing member {member.filename!r} ({reason})")
            total = sum(m.file_size for m in members)
            packed = Path(archive).stat().st_size
            if total > max_bytes or (total > RATIO_FLOOR and total > max_ratio * packed):
                raise DataFormatError(f"{archive}: refusing to unpack {total / 2**30:.2f} GiB from "
                                      f"{packed / 2**20:.1f} MiB (limits: {max_bytes / 2**30:.0f} GiB, "
                                      f"{max_ratio:g}x); unpack it yourself and pass the folder")
            target.mkdir(parents=True, exist_ok=True)
            for member in members:
                zf.extract(member, target)
    except zipfile.BadZipFile as exc:
        raise DataFormatError(f"{archive}: not a readable zip file ({exc})") from exc
    return target
