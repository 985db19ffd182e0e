"""Zip extraction that refuses archives able to write outside their target directory.

Every member is checked before anything is written: absolute paths, drive letters, ``..``
components and symlinks (Unix mode bits in the external attributes) refuse the whole archive.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from .errors import DataFormatError


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


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract ``archive`` into ``target`` after checking every member; returns ``target``."""
    target = Path(target)
    root = target.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for member in members:
                reason = unsafe_reason(member)
                if reason is None and not (root / member.filename).resolve().is_relative_to(root):
                    reason = f"lands outside {target}"
                if reason:
                    raise DataFormatError(f"{archive}: refusing member {member.filename!r} ({reason})")
            target.mkdir(parents=True, exist_ok=True)
            for member in members:
                zf.extract(member, target)
    except zipfile.BadZipFile as exc:
        raise DataFormatError(f"{archive}: not a readable zip file ({exc})") from exc
    return target
