"""The SPSC ring's shared-memory layout, field by field (the one place it is written down).

Segment = 512-byte header + `capacity` data bytes. Every header field is a u64 on its own
64-byte cache line, so the producer's and the consumer's counters never share a line, and each
field has exactly one writer. Counters are stored with aligned 8-byte stores (ctypes), which are
single, untorn stores on x86-64.

| offset | field                  | writer    | meaning                                             |
| ------ | ---------------------- | --------- | --------------------------------------------------- |
| 0      | magic                  | creator   | `MAGIC` (b"NESRING1" as u64)                        |
| 8      | capacity               | creator   | data bytes (multiple of 8)                          |
| 16     | max_record             | creator   | largest record payload accepted                     |
| 64     | head                   | producer  | total bytes ever published (monotonic)              |
| 128    | tail                   | consumer  | total bytes ever consumed (monotonic)               |
| 192    | durable_high_watermark | consumer  | last seq committed and fsynced                      |
| 256    | halt_code              | consumer  | 0 running, else the sidecar's halt code             |
| 320    | consumer_waiting       | consumer  | park number while it sleeps on the data semaphore   |
| 384    | producer_waiting       | producer  | 1 while the producer sleeps on the space semaphore  |
| 448    | durable_waiting        | producer  | 1 while a producer thread sleeps on durability      |
| 512    | data[capacity]         | producer  | records                                             |

Record at `pos = counter % capacity`, 8-byte aligned: `u32 length | u32 kind | payload |
pad to 8`. A record never straddles the end: if it does not fit before the end, the producer
writes a wrap marker (`kind = WRAP_KIND`) and the record starts at offset 0. Free space is
`capacity - (head - tail)`. The producer writes the record bytes, then stores `head` (x86-64 keeps
stores in order), so the consumer never sees a head that covers unwritten bytes.
"""

from __future__ import annotations

import struct

MAGIC = int.from_bytes(b"NESRING1", "little")
CACHE_LINE = 64

OFF_MAGIC = 0
OFF_CAPACITY = 8
OFF_MAX_RECORD = 16
OFF_HEAD = 1 * CACHE_LINE
OFF_TAIL = 2 * CACHE_LINE
OFF_DURABLE = 3 * CACHE_LINE
OFF_HALT = 4 * CACHE_LINE
OFF_CONSUMER_WAITING = 5 * CACHE_LINE
OFF_PRODUCER_WAITING = 6 * CACHE_LINE
OFF_DURABLE_WAITING = 7 * CACHE_LINE
HEADER_BYTES = 8 * CACHE_LINE

RECORD_HEADER = struct.Struct("<II")  # length, kind
WRAP_KIND = 0xFFFFFFFF
ALIGN = 8


def record_size(payload_len: int) -> int:
    """Bytes a record of `payload_len` occupies in the ring (header + payload, 8-aligned)."""
    return RECORD_HEADER.size + ((payload_len + ALIGN - 1) & ~(ALIGN - 1))


def min_capacity(max_record: int) -> int:
    """A record must fit even right after a wrap marker: two of the largest records."""
    return 2 * record_size(max_record)
