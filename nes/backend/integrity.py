"""What covers the bytes of a run file beyond the entry hashes (format version 2).

Contract: every byte a reader can return, or that recovery, retention or replay decide on, is
covered by a digest the verifier recomputes; the entry hash itself stays the crate's.
- Entries: the crate's entry hash (`nes.hash`), unchanged.
- Index rows: every write transaction that appends entries `first..last` also writes a commit
  record `digests["commit" || first u64 BE] = last u64 BE || rows u64 BE || sum[8]`, where
  `sum` is `(ΣCRC32(row) mod 2**32) << 32 | (ΣAdler32(row) mod 2**32)`, `row = len(db) || db
  || key || value` (value: the 8-byte seq), over the index rows that transaction put, in *every*
  index database the layout lists (`layout.ALL_INDEX_DBS`). An order-independent sum lets the
  verifier stream each index database once; a renamed key, a re-pointed row, an added or a lost
  row changes a sum (a change within one row always changes its CRC32). It is a checksum
  against damage, not a MAC: two small-int sums cost ~0.2 us per row on the writer's path; a
  BLAKE2b per row cost three times that and a BLAKE3 six times.
  Commit records tile `1..high_watermark` exactly.
- Manifest: `digests["manifest"] = BLAKE3(MANIFEST_DOMAIN || manifest bytes)`, written in the
  transaction that writes the manifest.
- Snapshot anchors: `digests["anchor" || key] = BLAKE3(ANCHOR_DOMAIN || key || value)`, written
  in the transaction that writes the anchor.
- Rollback: LMDB has no page checksums, so a flipped meta page can roll a file back one commit.
  A seal writes a small record outside the LMDB file (`nes.backend.seal_record`) that the
  verifier compares with what the file says.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from blake3 import blake3

__all__ = [
    "DB_DIGESTS",
    "MANIFEST_DIGEST_KEY",
    "COMMIT_PREFIX",
    "ANCHOR_PREFIX",
    "CommitRecord",
    "index_row_hash",
    "IndexRowSum",
    "manifest_digest",
    "anchor_digest",
    "anchor_key",
    "commit_key",
    "digest_bytes",
    "row_prefix",
    "row_term",
    "sum_rows",
    "encode_commit",
    "decode_commit",
]

DB_DIGESTS = b"digests"
MANIFEST_DIGEST_KEY = b"manifest"
COMMIT_PREFIX = b"commit"
ANCHOR_PREFIX = b"anchor"
MANIFEST_DOMAIN = b"nes/manifest/v1"
ANCHOR_DOMAIN = b"nes/anchor/v1"
_COMMIT = struct.Struct(">QQ8s")
_U64 = struct.Struct(">Q")
_LEN8 = struct.Struct(">B")
_LEN16 = struct.Struct(">H")


def row_prefix(db_name: bytes) -> bytes:
    """`len(db) || db`: what every row of index database `db_name` starts with."""
    return _LEN8.pack(len(db_name)) + db_name


def row_term(row: bytes) -> tuple[int, int]:
    """One index row's (CRC32, Adler32) (`row = row_prefix(db) + key + value`)."""
    return _crc32(row), _adler32(row)


def index_row_hash(db_name: bytes, key: bytes, value: bytes) -> tuple[int, int]:
    """One index row's contribution to its commit's sums."""
    return row_term(row_prefix(db_name) + bytes(key) + bytes(value))


_crc32 = zlib.crc32
_adler32 = zlib.adler32


class IndexRowSum:
    """The running sums of one commit's index rows (order-independent)."""

    __slots__ = ("rows", "crc_sum", "adler_sum")

    def __init__(self) -> None:
        self.rows = 0
        self.crc_sum = 0
        self.adler_sum = 0

    def add(self, db_name: bytes, key: bytes, value: bytes) -> None:
        """Account for one row put into index database `db_name`."""
        crc, adler = index_row_hash(db_name, key, value)
        self.rows += 1
        self.crc_sum += crc
        self.adler_sum += adler

    def digest(self) -> bytes:
        """The 8-byte sum stored in the commit record."""
        return digest_bytes(self.crc_sum, self.adler_sum)


def digest_bytes(crc_sum: int, adler_sum: int) -> bytes:
    """The sums as stored: (ΣCRC32 mod 2**32) << 32 | (ΣAdler32 mod 2**32), 8 bytes big-endian."""
    return _U64.pack(((crc_sum & 0xFFFFFFFF) << 32) | (adler_sum & 0xFFFFFFFF))


class CommitRecord(tuple[int, int, int, bytes]):
    """(first_seq, last_seq, rows, digest) of one write transaction."""

    __slots__ = ()

    @property
    def first_seq(self) -> int:
        return self[0]

    @property
    def last_seq(self) -> int:
        return self[1]


def commit_key(first_seq: int) -> bytes:
    """The digests-db key of the commit record whose first entry is `first_seq`."""
    return COMMIT_PREFIX + _U64.pack(first_seq)


def encode_commit(last_seq: int, rows: IndexRowSum) -> bytes:
    """The commit record's value."""
    return _COMMIT.pack(last_seq, rows.rows, rows.digest())


def decode_commit(key: bytes, value: bytes) -> CommitRecord | None:
    """A commit record from its raw row, or None if the row is malformed."""
    if len(key) != len(COMMIT_PREFIX) + 8 or len(value) != _COMMIT.size:
        return None
    (first,) = _U64.unpack_from(key, len(COMMIT_PREFIX))
    last, rows, digest = _COMMIT.unpack(value)
    return CommitRecord((first, last, rows, digest))


def manifest_digest(manifest_bytes: bytes) -> bytes:
    """The digest stored beside the manifest."""
    return blake3(MANIFEST_DOMAIN + bytes(manifest_bytes)).digest()


def anchor_key(anchor_db_key: bytes) -> bytes:
    """The digests-db key of the anchor stored under `anchor_db_key`."""
    return ANCHOR_PREFIX + bytes(anchor_db_key)


def anchor_digest(anchor_db_key: bytes, value: bytes) -> bytes:
    """The digest stored beside a snapshot anchor row."""
    h = blake3(ANCHOR_DOMAIN)
    h.update(_LEN16.pack(len(anchor_db_key)))
    h.update(bytes(anchor_db_key))
    h.update(bytes(value))
    return h.digest()


def sum_rows(rows: Iterable[tuple[bytes, bytes, bytes]]) -> IndexRowSum:
    """The digest of `(db_name, key, value)` rows (tests and tools)."""
    total = IndexRowSum()
    for db_name, key, value in rows:
        total.add(db_name, key, value)
    return total
