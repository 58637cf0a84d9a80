# SPDX-License-Identifier: GPL-2.0-or-later
"""Compression workers of the panic writer, with completion through a tasklet.

::

    writer thread                      worker threads (N)             polling loop
    -------------                      ------------------             ------------
    submit(seq, window pages) ----->   build_chunk (compress;
                                       zlib and zstd release the GIL;
                                       seal when encrypted: ChaCha20-
                                       Poly1305 in OpenSSL releases it too)
                                       put (seq, chunk) in _finished
                                       tasklet_schedule(_completion)
                                                                -->   run_pending():
                                                                      _completion moves
                                                                      _finished -> ready
    take(seq) <- ready[seq], in sequence order, so the stream on disk has no gaps

Completion is deferred work in the seed's sense: the workers never touch the
writer's state, they only schedule the completion tasklet, which runs from
the writer's polling loop between rw_block calls (the runtime's private list
in crash-dump mode). With ``threads == 0``, or a codec that holds the GIL
(lzo, snappy), chunks are built on the writer thread instead.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from diskdump.errors import DumpAbortedError
from diskdump.formats.chunk import build_chunk
from diskdump.formats.codecs import Codec
from diskdump.formats.crypt import ChunkCipher
from diskdump.runtime import core as runtime
from diskdump.runtime.core import Tasklet

__all__ = ["GIL_RELEASING_CODECS", "BuiltChunk", "ChunkJob", "CompressorPool"]

log = logging.getLogger(__name__)

#: codecs whose Python bindings compress without holding the GIL
GIL_RELEASING_CODECS = frozenset({"zlib", "zstd"})
#: seconds the writer sleeps at most while waiting for a chunk (it runs the lists between)
_WAIT_SLICE = 0.02


@dataclass(frozen=True, slots=True)
class ChunkJob:
    """One window's pages, ready to be encoded."""

    sequence: int
    start_pfn: int
    states: bytes
    raw: bytes
    held_pages: int


@dataclass(frozen=True, slots=True)
class BuiltChunk:
    """An encoded chunk (whole blocks) and how many pages it holds."""

    sequence: int
    data: bytes
    held_pages: int


class CompressorPool:
    """Encode chunks on ``threads`` workers (0: on the caller's thread).

    :param codec: the payload codec (already checked to be available)
    :param dump_id: stamped into every chunk
    :param block_size: chunks are padded to whole blocks
    :param cipher: seals every chunk payload (an encrypted dump); None: clear chunks
    """

    def __init__(
        self,
        codec: Codec,
        threads: int,
        *,
        dump_id: bytes,
        block_size: int,
        cipher: ChunkCipher | None = None,
    ) -> None:
        self.codec = codec
        self.cipher = cipher
        self.dump_id = dump_id
        self.block_size = block_size
        self.threads = threads if codec.name in GIL_RELEASING_CODECS else 0
        self.ready: dict[int, BuiltChunk] = {}
        self._lock = threading.Lock()
        self._finished: list[BuiltChunk] = []
        self._error: BaseException | None = None
        self._wake = threading.Event()
        self._completion = Tasklet(self._complete)
        self._jobs: queue.SimpleQueue[ChunkJob | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"compress-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
            if worker.ident is not None:
                runtime.adopt_thread(worker.ident)

    def _build(self, job: ChunkJob) -> BuiltChunk:
        data = build_chunk(
            sequence=job.sequence,
            dump_id=self.dump_id,
            start_pfn=job.start_pfn,
            states=job.states,
            raw=job.raw,
            codec=self.codec,
            block_size=self.block_size,
            cipher=self.cipher,
        )
        return BuiltChunk(job.sequence, data, job.held_pages)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                built = self._build(job)
            except BaseException as err:  # handed to the writer thread
                with self._lock:
                    self._error = err
            else:
                with self._lock:
                    self._finished.append(built)
            runtime.tasklet_schedule(self._completion)
            self._wake.set()

    def _complete(self) -> None:
        # the completion tasklet: runs in the writer's polling loop
        with self._lock:
            finished, self._finished = self._finished, []
        for built in finished:
            self.ready[built.sequence] = built

    def submit(self, job: ChunkJob) -> None:
        """Queue ``job`` (or encode it now when there are no workers)."""
        if not self._workers:
            with self._lock:
                self._finished.append(self._build(job))
            runtime.tasklet_schedule(self._completion)
            return
        self._jobs.put(job)

    def take(self, sequence: int) -> BuiltChunk:
        """Wait for chunk ``sequence``, running the private lists meanwhile.

        :raises DumpAbortedError: a worker failed
        """
        while sequence not in self.ready:
            runtime.run_pending()
            if sequence in self.ready:
                break
            with self._lock:
                error = self._error
            if error is not None:
                raise DumpAbortedError(f"compression worker failed: {error}") from error
            self._wake.wait(_WAIT_SLICE)
            self._wake.clear()
        return self.ready.pop(sequence)

    def close(self) -> None:
        """Stop the workers after the jobs already queued."""
        for _ in self._workers:
            self._jobs.put(None)
