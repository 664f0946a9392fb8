"""The CRC record format: damage may cost records, never alter one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hookdb.client.records import RECORD_HEADER_SIZE, Damage, Record, RecordReader, encode_record

bodies = st.lists(st.binary(max_size=300), max_size=30)


def read_all(stream: bytes, chunks: list[int], max_body: int = 1000) -> tuple[list[Record], list[Damage]]:
    reader = RecordReader(max_body)
    records: list[Record] = []
    damage: list[Damage] = []
    pos = 0
    for size in [*chunks, len(stream)]:
        reader.receive_data(stream[pos : pos + size])
        pos += size
        while (item := reader.next_record()) is not None:
            (records if isinstance(item, Record) else damage).append(item)
    reader.end_of_data()
    while (item := reader.next_record()) is not None:
        (records if isinstance(item, Record) else damage).append(item)
    return records, damage


def layout(items: list[bytes]) -> tuple[bytes, dict[int, bytes]]:
    stream = b"".join(encode_record(b) for b in items)
    offsets, at = {}, 0
    for body in items:
        offsets[at] = body
        at += RECORD_HEADER_SIZE + len(body)
    return stream, offsets


@given(bodies, st.lists(st.integers(1, 200), max_size=20))
def test_intact_stream_reads_back_exactly(items: list[bytes], chunks: list[int]) -> None:
    stream, _ = layout(items)
    records, damage = read_all(stream, chunks)
    assert [r.body for r in records] == items
    assert damage == []


@given(bodies, st.data())
def test_truncation_loses_only_the_torn_record(items: list[bytes], data: st.DataObject) -> None:
    stream, offsets = layout(items)
    cut = data.draw(st.integers(0, len(stream)))
    records, damage = read_all(stream[:cut], data.draw(st.lists(st.integers(1, 200), max_size=10)))
    complete = [body for at, body in offsets.items() if at + RECORD_HEADER_SIZE + len(body) <= cut]
    assert [r.body for r in records] == complete
    torn = cut - (records[-1].end if records else 0)
    assert damage == ([Damage(cut - torn, cut)] if torn else [])


@given(bodies.filter(bool), st.data())
def test_bit_flips_never_yield_a_wrong_record(items: list[bytes], data: st.DataObject) -> None:
    stream, offsets = layout(items)
    damaged = bytearray(stream)
    flips = data.draw(st.lists(st.integers(0, len(stream) * 8 - 1), min_size=1, max_size=5)) if stream else []
    for bit in flips:
        damaged[bit // 8] ^= 1 << (bit % 8)
    records, damage = read_all(bytes(damaged), data.draw(st.lists(st.integers(1, 200), max_size=10)))
    for record in records:
        assert offsets.get(record.offset) == record.body  # every record returned is an original, in place
    returned = {r.offset for r in records}
    for at in offsets:
        if at not in returned:  # a lost record lies inside a reported damaged span
            assert any(d.start <= at < d.end for d in damage)


def test_records_after_damage_are_recovered() -> None:
    stream, _ = layout([b"one", b"two", b"three"])
    damaged = bytearray(stream)
    damaged[RECORD_HEADER_SIZE + 1] ^= 0xFF  # inside the first body
    records, damage = read_all(bytes(damaged), [])
    assert [r.body for r in records] == [b"two", b"three"]
    assert damage == [Damage(0, RECORD_HEADER_SIZE + 3)]


def test_an_absurd_length_is_damage_not_an_allocation() -> None:
    bogus = b"\xb5\x4b" + (2**32 - 1).to_bytes(4, "big") + b"\0\0\0\0"
    records, damage = read_all(bogus + encode_record(b"ok"), [])
    assert [r.body for r in records] == [b"ok"]
    assert damage == [Damage(0, len(bogus))]
