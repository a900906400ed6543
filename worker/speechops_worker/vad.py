"""Silero VAD for many streams at once: per-stream state, one forward call per round.

Silero's public wrapper keeps one hidden state and resets it whenever the batch size
changes, so it cannot serve many streams. Its inner 16 kHz module takes the state
explicitly: x [B, 64 + 512] (64 samples of context from the previous chunk, then the
chunk), state [2, B, 128] -> (probability [B, 1], new state). This module keeps each
stream's state (RNN state + context, about 1.3 KB) in a slot of two preallocated tensors
and runs all streams of a request through one forward call per round.

Packed requests (catalog.py): row i is one 512-sample chunk of stream STREAM_ID[i];
a stream may have several rows in one request, in time order, so the rows are
processed in rounds — round k takes each stream's k-th row.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speechops_contract.catalog import SAMPLE_RATE, VAD_CHUNK

CONTEXT = 64          # samples of the previous chunk the model sees (16 kHz)
STATE_SHAPE = (2, 128)


class VadInputError(ValueError):
    """A request that does not follow the tensor contract."""


def load_silero_16k() -> torch.jit.ScriptModule:
    """The inner 16 kHz module of the TorchScript model shipped in PyPI silero-vad."""
    import silero_vad
    path = Path(silero_vad.__file__).resolve().parent / "data" / "silero_vad.jit"
    with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; the package ships TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        wrapper = torch.jit.load(str(path), map_location="cpu")
    wrapper.eval()
    return wrapper._model


def rounds(stream_ids: np.ndarray) -> list[np.ndarray]:
    """Row indices per round: round k holds each stream's k-th row (rows keep time order)."""
    n = len(stream_ids)
    if n == 0:
        return []
    if len(np.unique(stream_ids)) == n:
        return [np.arange(n)]
    seen: dict[int, int] = {}
    rank = np.empty(n, dtype=np.int64)
    for i, sid in enumerate(stream_ids.tolist()):
        rank[i] = seen.get(sid, 0)
        seen[sid] = rank[i] + 1
    return [np.flatnonzero(rank == k) for k in range(int(rank.max()) + 1)]


def validate(audio: np.ndarray, stream_ids: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
    if audio.ndim != 2 or audio.shape[1] != VAD_CHUNK:
        raise VadInputError(f"AUDIO must be [rows, {VAD_CHUNK}] (32 ms at {SAMPLE_RATE} Hz), got {list(audio.shape)}")
    n = audio.shape[0]
    for name, tensor in (("STREAM_ID", stream_ids), ("START", start), ("END", end)):
        if tensor.shape != (n,):
            raise VadInputError(f"{name} must be [{n}] (one per AUDIO row), got {list(tensor.shape)}")
    if not np.isfinite(audio).all():
        raise VadInputError("AUDIO holds NaN or infinite samples")


@dataclass(frozen=True)
class VadStats:
    active_streams: int
    capacity: int
    implicit_starts: int   # rows of unknown streams without START (e.g. after a sweep)
    swept: int             # streams freed for being idle


class BatchedVad:
    """Per-stream Silero VAD state, batched across streams.

    State lives in slot-indexed tensors so gathering and scattering a round is two index
    operations, whatever the number of streams."""

    def __init__(self, model: torch.jit.ScriptModule | None = None, *, idle_timeout_s: float = 30.0,
                 device: str = "cpu", initial_capacity: int = 64, clock=time.monotonic):
        self.model = model if model is not None else load_silero_16k()
        self.device = torch.device(device)
        self.model.to(self.device)
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self._slot_of: dict[int, int] = {}
        self._free: list[int] = []
        self._capacity = 0
        self._state = torch.zeros((2, 0, 128), device=self.device)
        self._context = torch.zeros((0, CONTEXT), device=self.device)
        self._last_seen = np.zeros(0)
        self._stream_of_slot = np.zeros(0, dtype=np.uint64)
        self._implicit_starts = 0
        self._swept = 0
        self._grow(initial_capacity)

    # -- public ------------------------------------------------------------------------
    def process(self, audio: np.ndarray, stream_ids: np.ndarray, start: np.ndarray,
                end: np.ndarray, now: float | None = None) -> np.ndarray:
        """Speech probability per row. START resets a stream's state before its row;
        END frees it after; streams idle past idle_timeout_s are swept first."""
        stream_ids = np.asarray(stream_ids).astype(np.uint64, copy=False)
        start = np.asarray(start).astype(bool, copy=False)
        end = np.asarray(end).astype(bool, copy=False)
        validate(audio, stream_ids, start, end)
        now = self.clock() if now is None else now
        self.sweep(now)
        probs = np.empty(audio.shape[0], dtype=np.float32)
        chunks = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)
        for rows in rounds(stream_ids):
            slots = self._slots_for(stream_ids[rows], start[rows], now)
            index = torch.from_numpy(slots).to(self.device)
            with torch.inference_mode():
                x = torch.cat([self._context.index_select(0, index), chunks[torch.from_numpy(rows)]], dim=1)
                out, state = self.model(x, self._state.index_select(1, index))
                self._state.index_copy_(1, index, state)
                self._context.index_copy_(0, index, x[:, -CONTEXT:])
            probs[rows] = out[:, 0].float().cpu().numpy()
            for sid in stream_ids[rows][end[rows]].tolist():
                self.free(sid)
        return probs

    def free(self, stream_id: int) -> bool:
        slot = self._slot_of.pop(int(stream_id), None)
        if slot is None:
            return False
        self._free.append(slot)
        return True

    def sweep(self, now: float | None = None) -> list[int]:
        """Free streams not seen for idle_timeout_s (the backend is never told a stream died)."""
        now = self.clock() if now is None else now
        if not self._slot_of:
            return []
        slots = np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of))
        idle = slots[self._last_seen[slots] < now - self.idle_timeout_s]
        gone = [int(self._stream_of_slot[s]) for s in idle]
        for sid in gone:
            self.free(sid)
        self._swept += len(gone)
        return gone

    def has_stream(self, stream_id: int) -> bool:
        return int(stream_id) in self._slot_of

    def stats(self) -> VadStats:
        return VadStats(active_streams=len(self._slot_of), capacity=self._capacity,
                        implicit_starts=self._implicit_starts, swept=self._swept)

    # -- internals -----------------------------------------------------------------------
    def _slots_for(self, ids: np.ndarray, starts: np.ndarray, now: float) -> np.ndarray:
        slots = np.empty(len(ids), dtype=np.int64)
        fresh: list[int] = []
        for i, (sid, is_start) in enumerate(zip(ids.tolist(), starts.tolist())):
            slot = self._slot_of.get(sid)
            if slot is None:
                if not is_start:
                    self._implicit_starts += 1
                slot = self._allocate(sid)
                fresh.append(slot)
            elif is_start:
                fresh.append(slot)
            slots[i] = slot
        if fresh:
            index = torch.tensor(fresh, device=self.device)
            self._state.index_fill_(1, index, 0.0)
            self._context.index_fill_(0, index, 0.0)
        self._last_seen[slots] = now
        return slots

    def _allocate(self, stream_id: int) -> int:
        if not self._free:
            self._grow(max(64, self._capacity))
        slot = self._free.pop()
        self._slot_of[stream_id] = slot
        self._stream_of_slot[slot] = stream_id
        return slot

    def _grow(self, extra: int) -> None:
        old = self._capacity
        self._capacity += extra
        self._state = torch.cat([self._state, torch.zeros((2, extra, 128), device=self.device)], dim=1)
        self._context = torch.cat([self._context, torch.zeros((extra, CONTEXT), device=self.device)], dim=0)
        self._last_seen = np.concatenate([self._last_seen, np.zeros(extra)])
        self._stream_of_slot = np.concatenate([self._stream_of_slot, np.zeros(extra, dtype=np.uint64)])
        # Pop from the end: lowest slots first keeps the working set compact.
        self._free.extend(range(self._capacity - 1, old - 1, -1))


def speech_segments(probs: np.ndarray, *, threshold: float = 0.5, neg_threshold: float | None = None,
                    min_speech_chunks: int = 3, min_silence_chunks: int = 8) -> list[tuple[int, int]]:
    """Chunk-index segments [start, end) of speech from per-chunk probabilities, with
    hysteresis (Silero's own rule: enter above threshold, leave below threshold - 0.15)."""
    neg = threshold - 0.15 if neg_threshold is None else neg_threshold
    segments: list[tuple[int, int]] = []
    in_speech, begin, silent = False, 0, 0
    for i, p in enumerate(np.asarray(probs).tolist()):
        if not in_speech:
            if p >= threshold:
                in_speech, begin, silent = True, i, 0
        elif p < neg:
            silent += 1
            if silent >= min_silence_chunks:
                end = i - silent + 1
                if end - begin >= min_speech_chunks:
                    segments.append((begin, end))
                in_speech = False
        else:
            silent = 0
    if in_speech:
        end = len(probs) - silent
        if end - begin >= min_speech_chunks:
            segments.append((begin, end))
    return segments
