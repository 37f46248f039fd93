"""File names driftdeck derives from a batch file's name (quarantine copies, prediction files).

A batch may carry any name its file system allows: up to 255 bytes, and bytes
that are not UTF-8. A derived name adds a content prefix and a suffix (and
the atomic writer a temporary name's parts), so it keeps the batch name whole
only up to :data:`KEPT_NAME_BYTES`; a longer name is cut there and ends with a
hash of the whole name, so two long names never meet. Bytes that are not
UTF-8 pass through unchanged (Python holds them as surrogates).
"""

from __future__ import annotations

import hashlib
import os

KEPT_NAME_BYTES = 160  # 255 - (12 + 1 prefix) - (11 ".reason.txt") - (1 + 13 of a temporary name), with room to spare
NAME_HASH_CHARS = 12


def derived_name(prefix: str, name: str, suffix: str = "") -> str:
    """``<prefix>-<name><suffix>``, with ``name`` shortened by a hash when it is longer than KEPT_NAME_BYTES."""
    raw = os.fsencode(name)
    if len(raw) > KEPT_NAME_BYTES:
        digest = hashlib.sha256(raw).hexdigest()[:NAME_HASH_CHARS].encode("ascii")
        raw = raw[: KEPT_NAME_BYTES - NAME_HASH_CHARS - 1] + b"~" + digest
    return f"{prefix}-{os.fsdecode(raw)}{suffix}"
