# SPDX-License-Identifier: GPL-2.0-or-later
"""Flattened stream (makedumpfile -F/-R): writing, indexing, overlaps, gaps and errors."""

from __future__ import annotations

import io
import itertools
import os
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskdump.errors import (
    BadMagicError,
    CorruptDataError,
    TruncatedError,
    UnsupportedVersionError,
)
from diskdump.formats.flattened import (
    FLAT_HEADER_SIZE,
    FLAT_SIGNATURE,
    FlattenedView,
    is_flattened,
    reassemble,
    write_flattened,
)
from diskdump.formats.kdump_read import KdumpFile
from diskdump.formats.kdump_write import write_kdump
from tests.differential.synthetic import build_source

END = struct.pack(">qq", -1, -1)


def stream(
    records: list[tuple[int, bytes]], *, end: bool = True, head: bytes | None = None
) -> bytes:
    header = head or (FLAT_SIGNATURE + struct.pack(">qq", 1, 1)).ljust(FLAT_HEADER_SIZE, b"\0")
    body = b"".join(struct.pack(">qq", off, len(data)) + data for off, data in records)
    return header + body + (END if end else b"")


def view_of(tmp_path: Path, raw: bytes) -> FlattenedView:
    path = tmp_path / "flat"
    path.write_bytes(raw)
    fd = os.open(path, os.O_RDONLY)
    return FlattenedView(fd, path=str(path))


def test_write_then_read(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(300_000)
    out = io.BytesIO()
    size = write_flattened(lambda o, n: data[o : o + n], len(data), out, record_size=65536)
    raw = out.getvalue()
    assert size == len(raw)
    assert raw[:16] == b"makedumpfile\0\0\0\0" and raw[16:32] == struct.pack(">qq", 1, 1)
    assert raw[32:FLAT_HEADER_SIZE] == bytes(FLAT_HEADER_SIZE - 32) and raw.endswith(END)
    view = view_of(tmp_path, raw)
    assert view.records == 5 and view.size == len(data)
    starts = [s for s, _, _ in view.segments()]
    assert starts == sorted(starts) == [0, 65536, 131072, 196608, 262144]
    assert view.pread(0, len(data)) == data
    assert view.pread(65530, 20) == data[65530:65550]
    assert is_flattened(io.BytesIO(raw)) and not is_flattened(io.BytesIO(data))


def test_writes_to_a_pipe(tmp_path: Path) -> None:
    data = b"abc" * 5000
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the writer sees only a pipe
        os.close(rfd)
        with os.fdopen(wfd, "wb") as pipe:
            write_flattened(lambda o, n: data[o : o + n], len(data), pipe, record_size=4096)
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        raw = pipe.read()
    os.waitpid(pid, 0)
    assert view_of(tmp_path, raw).pread(0, len(data)) == data


def test_out_of_order_and_overlapping_later_wins(tmp_path: Path) -> None:
    records = [(100, b"A" * 50), (0, b"B" * 60), (40, b"C" * 10), (120, b"D" * 10), (55, b"E" * 60)]
    view = view_of(tmp_path, stream(records))
    expected = bytearray(150)
    for off, data in records:
        expected[off : off + len(data)] = data
    assert view.pread(0, 150) == bytes(expected)
    assert view.size == 150


def test_gaps_are_errors_unless_allowed(tmp_path: Path) -> None:
    view = view_of(tmp_path, stream([(0, b"x" * 10), (4096, b"y" * 10)]))
    assert view.pread(0, 10) == b"x" * 10
    with pytest.raises(TruncatedError, match=r"holds no data for this range at offset 0xa"):
        view.pread(5, 100)
    assert view.pread(5, 4096, zero_gaps=True) == b"x" * 5 + bytes(4086) + b"y" * 5
    out = tmp_path / "plain"
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert reassemble(view, fd) == 4106
    finally:
        os.close(fd)
    assert out.read_bytes() == b"x" * 10 + bytes(4086) + b"y" * 10


def test_missing_end_marker(tmp_path: Path) -> None:
    with pytest.raises(TruncatedError, match=r"ends without its end marker"):
        view_of(tmp_path, stream([(0, b"x")], end=False))


def test_record_past_the_end(tmp_path: Path) -> None:
    raw = stream([(0, b"x" * 100)], end=False)[:-50]
    with pytest.raises(TruncatedError, match=r"record runs past the end .*field buf_size"):
        view_of(tmp_path, raw)


@pytest.mark.parametrize(("offset", "size", "field"), [(-5, 10, "offset"), (0, 0, "buf_size")])
def test_invalid_record_header(tmp_path: Path, offset: int, size: int, field: str) -> None:
    raw = stream([]).replace(END, struct.pack(">qq", offset, size) + END)
    with pytest.raises(CorruptDataError, match=rf"record header is invalid in field {field}"):
        view_of(tmp_path, raw)


def test_bad_signature_and_type(tmp_path: Path) -> None:
    with pytest.raises(BadMagicError, match=r"not a flattened dump in field signature"):
        view_of(tmp_path, stream([], head=b"makedumpfilX".ljust(FLAT_HEADER_SIZE, b"\0")))
    head = (FLAT_SIGNATURE + struct.pack(">qq", 2, 1)).ljust(FLAT_HEADER_SIZE, b"\0")
    with pytest.raises(UnsupportedVersionError, match=r"header type not supported"):
        view_of(tmp_path, stream([], head=head))
    head = (FLAT_SIGNATURE + struct.pack(">qq", 1, 2)).ljust(FLAT_HEADER_SIZE, b"\0")
    with pytest.raises(UnsupportedVersionError, match=r"header version not supported"):
        view_of(tmp_path, stream([], head=head))
    with pytest.raises(TruncatedError, match=r"flattened header is cut short"):
        view_of(tmp_path, FLAT_SIGNATURE)


def test_is_flattened_never_raises_or_moves(tmp_path: Path) -> None:
    raw = stream([(0, b"x")])
    path = tmp_path / "f"
    path.write_bytes(raw)
    with path.open("rb") as f:
        f.seek(7)
        assert is_flattened(f) and f.tell() == 7
    assert not is_flattened(io.BytesIO(b"short"))
    closed = path.open("rb")
    closed.close()
    assert not is_flattened(closed)


def test_kdump_through_flattened(tmp_path: Path) -> None:
    source = build_source()
    plain = tmp_path / "vmcore"
    with plain.open("wb") as f:
        write_kdump(source, f, compress="zlib")
    raw = plain.read_bytes()
    flat = tmp_path / "vmcore.flat"
    with flat.open("wb") as f:
        write_flattened(lambda o, n: raw[o : o + n], len(raw), f)
    with KdumpFile.open(flat) as a, KdumpFile.open(plain) as b:
        assert a.flattened and not b.flattened
        assert a.data_runs() == b.data_runs() and a.notes == b.notes
        for run in b.data_runs():
            assert a.read_pages(run.start_pfn, run.pages) == b.read_pages(run.start_pfn, run.pages)


records_strategy = st.lists(
    st.tuples(st.integers(0, 3000), st.binary(min_size=1, max_size=400)), max_size=12
)


@settings(max_examples=60, deadline=None)
@given(records=records_strategy)
def test_index_matches_a_model(tmp_path_factory: pytest.TempPathFactory, records: list) -> None:
    tmp = tmp_path_factory.mktemp("flat")
    view = view_of(tmp, stream(records))
    try:
        check_model(view, records)
    finally:
        os.close(view.fd)


def check_model(view: FlattenedView, records: list) -> None:
    size = max((off + len(data) for off, data in records), default=0)
    model = bytearray(size)
    covered = [False] * size
    for off, data in records:
        model[off : off + len(data)] = data
        covered[off : off + len(data)] = [True] * len(data)
    assert view.size == size
    assert view.pread(0, size, zero_gaps=True) == bytes(model)
    if size and all(covered):
        assert view.pread(0, size) == bytes(model)
    segments = view.segments()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(segments))
    assert sum(e - s for s, e, _ in segments) == sum(covered)
