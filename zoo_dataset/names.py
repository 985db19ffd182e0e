"""Names that come from archives and listings: normalised before they are compared, refused where
they cannot be one plain name.

One rule for every such name: two spellings of one file are one name. A zip member
``zoo/./trial/params.json`` or ``zoo//trial/params.json`` unpacks to ``zoo/trial/params.json``, so
a duplicate check that compares raw names lets a second copy replace the first; Unicode text has
composed and decomposed spellings of one character (NFC is the form compared). Names that no
normalisation makes safe (``..``, absolute paths, control characters, a backslash, whose meaning
differs between systems) are refused, never repaired.
"""

from __future__ import annotations

import posixpath
import unicodedata

FORBIDDEN_CHARACTERS = "\\"  # zip names separate folders with "/" only (APPNOTE 4.4.17.1); Windows reads "\\" so


def _control(text: str) -> bool:
    """Whether ``text`` holds a control or otherwise unprintable character (NUL, newline, DEL, ...)."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in text)


def archive_path(name: str) -> str:
    """A zip member's name as the one relative POSIX path it unpacks to (``a/./b//c/`` -> ``a/b/c``,
    NFC); ValueError saying why when it is not a plain path inside the archive."""
    if _control(name):
        raise ValueError("a control character in the name")
    if any(c in name for c in FORBIDDEN_CHARACTERS):
        raise ValueError("a backslash in the name (zip names separate folders with '/')")
    parts = name.split("/")
    if name.startswith("/") or parts[0].endswith(":"):
        raise ValueError("absolute path")
    if ".." in parts:
        raise ValueError("'..' path traversal")
    normal = normal_name(posixpath.normpath(name))
    if normal in (".", ""):
        raise ValueError("an empty name")
    return normal


def plain_file_name(name: str) -> str:
    """A file name from a listing (a Zenodo key) in NFC: one path component with a name before its
    extension, no control characters; ValueError otherwise."""
    normal = normal_name(name)
    stem = normal.rpartition(".")[0] if "." in normal else normal
    if _control(normal) or "/" in normal or "\\" in normal or not stem.strip(" ."):
        raise ValueError(f"file name {name!r} is not a plain file name")
    return normal


def normal_name(name: str) -> str:
    """The form in which names are compared and kept (NFC): look-ups by name key on it."""
    return unicodedata.normalize("NFC", name)


def same_name(a: str, b: str) -> bool:
    """Whether two names from a listing, an archive or a table are one name."""
    return normal_name(a) == normal_name(b)
