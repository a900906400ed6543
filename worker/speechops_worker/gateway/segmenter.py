"""Speech segments from per-chunk VAD probabilities: a small hysteresis state machine.

Speech starts at the first chunk with probability >= `threshold`; it ends after
`min_silence_chunks` chunks in a row below `threshold - 0.15` (Silero's own hysteresis).
Segments shorter than `min_speech_chunks` are marked `discard` so a click or a breath
never reaches ASR (Whisper invents words on noise).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VadParams:
    threshold: float = 0.5
    min_silence_chunks: int = 8      # 8 x 32 ms = 256 ms of silence ends an utterance
    min_speech_chunks: int = 6       # shorter than ~190 ms: not speech worth decoding
    pre_roll_chunks: int = 10        # ~320 ms kept before the start so soft onsets are not cut

    @property
    def neg_threshold(self) -> float:
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True)
class Transition:
    kind: str              # "start" | "end"
    chunk: int             # start: first speech chunk; end: last speech chunk
    discard: bool = False  # end of a segment too short to be speech


class Segmenter:
    __slots__ = ("params", "speaking", "start_chunk", "last_speech", "silent_run", "chunk")

    def __init__(self, params: VadParams = VadParams()) -> None:
        self.params = params
        self.speaking = False
        self.start_chunk = 0
        self.last_speech = 0
        self.silent_run = 0
        self.chunk = -1

    def step(self, prob: float) -> Transition | None:
        """Feeds the next chunk's probability; returns a transition when one happens."""
        self.chunk += 1
        p = self.params
        if not self.speaking:
            if prob >= p.threshold:
                self.speaking, self.start_chunk, self.last_speech, self.silent_run = True, self.chunk, self.chunk, 0
                return Transition("start", self.chunk)
            return None
        if prob >= p.neg_threshold:
            self.last_speech, self.silent_run = self.chunk, 0
            return None
        self.silent_run += 1
        if self.silent_run >= p.min_silence_chunks:
            return self.end()
        return None

    def end(self) -> Transition | None:
        """Ends the current segment now (end of stream, forced cut); None if silent."""
        if not self.speaking:
            return None
        self.speaking, self.silent_run = False, 0
        short = self.last_speech - self.start_chunk + 1 < self.params.min_speech_chunks
        return Transition("end", self.last_speech, discard=short)
