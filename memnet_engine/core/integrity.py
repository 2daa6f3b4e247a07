"""A SHA-256 of our own binary files (.caffemodel, .solverstate), kept inside the file itself.

The digest travels as the file's first protobuf field: an unknown, length-delimited field
(number ``SEAL_FIELD``) holding ``SEAL_MAGIC``, the SHA-256 of every byte after the field and,
for a solverstate, the digest of the caffemodel it was written with.  Caffe (and any protobuf
reader) skips an unknown field, so sealed files stay Caffe files; reading one here checks the
digest, so a flipped bit or a truncated copy is reported instead of loaded.  A file without the
field (Caffe's own, or one re-saved by Caffe, which moves unknown fields to the end) is read as
it is.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

SEAL_FIELD = 0x4D454E  # 'MEN': above 2**18, so its tag takes four bytes
SEAL_MAGIC = b"memnetv1"
DIGEST = 32


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    """The protobuf wire bytes of field ``field`` holding ``payload`` (bytes, a message or a packed array)."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


_TAG = _varint(SEAL_FIELD << 3 | 2)
_LENGTHS = {len(SEAL_MAGIC) + DIGEST: False, len(SEAL_MAGIC) + 2 * DIGEST: True}  # header size -> has a pair
HEADER_PEEK = len(_TAG) + 1 + len(SEAL_MAGIC) + 2 * DIGEST  # enough bytes to read any header


@dataclass
class Unsealed:
    """A file's message bytes and what its seal says (``sealed`` False: a file without one)."""

    body: "bytes | memoryview"
    sealed: bool = False
    intact: bool = True
    digest: bytes = b""       # the SHA-256 the file records for its body
    paired: bytes = b""       # the recorded digest of the file written with it (a solverstate's caffemodel)


def seal_header(body: bytes, paired: bytes = b"") -> bytes:
    """The field holding the SHA-256 of ``body`` (a serialised message) and ``paired`` (the digest of the
    caffemodel a solverstate goes with), to be written before ``body``."""
    if len(paired) not in (0, DIGEST):
        raise ValueError("paired must be a SHA-256 digest")
    return length_delimited(SEAL_FIELD, SEAL_MAGIC + hashlib.sha256(body).digest() + paired)


def seal(body: bytes, paired: bytes = b"") -> bytes:
    """``body`` preceded by its ``seal_header``."""
    return seal_header(body, paired) + body


def read_seal(raw: bytes) -> "Unsealed | None":
    """The seal at the start of ``raw`` (its body left empty), or None; ``raw`` may be only the first
    ``HEADER_PEEK`` bytes of a file."""
    start = len(_TAG) + 1
    if not raw.startswith(_TAG) or len(raw) < start or raw[len(_TAG)] not in _LENGTHS:
        return None
    if raw[start:start + len(SEAL_MAGIC)] != SEAL_MAGIC:
        return None
    digest_at = start + len(SEAL_MAGIC)
    paired = raw[digest_at + DIGEST:digest_at + 2 * DIGEST] if _LENGTHS[raw[len(_TAG)]] else b""
    return Unsealed(b"", True, True, bytes(raw[digest_at:digest_at + DIGEST]), bytes(paired))


def unseal(raw: bytes) -> Unsealed:
    """The message bytes of a file and whether they match the digest it records."""
    found = read_seal(raw)
    if found is None:
        return Unsealed(raw)
    body = memoryview(raw)[len(_TAG) + 1 + raw[len(_TAG)]:]
    found.body, found.intact = body, hashlib.sha256(body).digest() == found.digest
    return found


def peek_seal(path: str) -> "Unsealed | None":
    """The seal at the start of the file ``path`` (None: no seal, or unreadable)."""
    try:
        with open(path, "rb") as f:
            return read_seal(f.read(HEADER_PEEK))
    except OSError:
        return None
