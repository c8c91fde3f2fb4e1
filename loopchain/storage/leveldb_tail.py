"""A LevelDB log whose end a power cut left zeroed, cut back before the record that ran into it.

Some file systems (XFS; ext4 with data=writeback) can come back from a power cut with a file's
last pages zeroed: its size was recorded, the data it had not synced was not. LevelDB's log (and
MANIFEST) keep records in 32 KiB blocks, each fragment of a record behind a 7-byte header
(checksum, length, type). A record whose header survived but whose bytes were zeroed fails its
checksum, and with the paranoid checks (which refuse real damage in a log rather than drop the
synced writes around it) the store was refused at its next opening.

What was synced is never zeroed so: only the writes after the last sync, which were not
acknowledged. So the one record that runs into a file's zeroed end (all its fragments), when it
fails its checksum or never ends, is cut, kept beside the file, and the store opened again: it
opens when that was all that was wrong, and is put back as it was when not (the damage is
elsewhere, and is refused as before). A record whose own bytes end in zeros passes its checksum
and is kept.
"""

from __future__ import annotations

import google_crc32c

BLOCK_BYTES = 32768  # LevelDB's log block
HEADER_BYTES = 7  # a fragment's header: checksum (4), length (2, little-endian), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4  # a fragment's type (0: a zeroed header)


def zeroed_tail_cut(raw: bytes) -> int | None:
    """Where to cut `raw`, a file in LevelDB's log format, so that it ends before the record that
    runs into its zeroed end; None when it has no zeroed end, the zeros begin where a record
    does (LevelDB reads those as the end already), that record is whole (its own bytes end in
    zeros), or the fragments before it are not (damage that is not a zeroed end)."""
    zero_from = len(raw.rstrip(b"\0"))
    if zero_from == len(raw):
        return None
    offset, start = 0, None  # start: of the record whose fragments are being read
    while True:
        left = BLOCK_BYTES - offset % BLOCK_BYTES
        if left < HEADER_BYTES:  # a block's trailer, zero-filled by the writer
            offset += left
            continue
        length = int.from_bytes(raw[offset + 4 : offset + 6], "little")
        kind = raw[offset + 6] if offset + HEADER_BYTES <= len(raw) else 0
        if offset + HEADER_BYTES + length > zero_from:  # it runs into the zeros (or lies in them)
            cut = offset if start is None else start
            return cut if cut < zero_from and _damaged(raw, cut) else None
        if length > left - HEADER_BYTES:
            return None
        if kind == 0 and length == 0:  # a zeroed header: the rest of the block is skipped
            if start is not None:
                return None
            offset += left
            continue
        if kind in (FULL, FIRST) and start is None:
            start = offset if kind == FIRST else None
        elif kind in (MIDDLE, LAST) and start is not None:
            start = start if kind == MIDDLE else None
        else:
            return None
        offset += HEADER_BYTES + length


def _damaged(raw: bytes, offset: int) -> bool:
    """Whether the record whose first fragment is at `offset` fails a fragment's checksum or
    never ends (the file does, or a zeroed header stands where its next fragment belongs)."""
    while True:
        left = BLOCK_BYTES - offset % BLOCK_BYTES
        if left < HEADER_BYTES:
            offset += left
            continue
        length = int.from_bytes(raw[offset + 4 : offset + 6], "little")
        end = offset + HEADER_BYTES + length
        if end > len(raw) or length > left - HEADER_BYTES or raw[offset + 6] == 0:
            return True
        if int.from_bytes(raw[offset : offset + 4], "little") != _masked_crc(raw[offset + 6 : end]):
            return True
        if raw[offset + 6] in (FULL, LAST):
            return False
        offset = end


def _masked_crc(data: bytes) -> int:
    """LevelDB's stored checksum of `data` (a fragment's type and bytes): CRC-32C, rotated right
    by 15 bits, plus a constant (so that a checksum of data holding checksums differs)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
