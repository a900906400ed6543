"""Real speech for tests: sentences synthesized with espeak-ng, resampled by sox to
16 kHz mono PCM16, and a word error rate to judge transcripts against them.

Import from tests as `import speech` (pytest puts tests/ on sys.path through
tests/conftest.py); benchmarks add tests/ to sys.path themselves.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000

# Plain sentences espeak-ng pronounces clearly; the ASR tests assert WER over all of them.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is sunny with a light breeze from the west.",
    "We need to schedule a meeting with the design team next Tuesday.",
    "She sells sea shells by the sea shore.",
    "The train to the city leaves at half past seven in the morning.",
    "Turn off the lights in the kitchen before you go to bed.",
    "My favorite color is blue and I like to swim in the ocean.",
    "The children played football in the park until it got dark.",
    "Can you send me the report by the end of the day?",
    "The museum opens at nine and closes at five every weekday.",
    "He bought three apples, two oranges and a loaf of bread.",
)


def have_tools() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


@functools.lru_cache(maxsize=256)
def _synthesize(text: str, voice: str, words_per_minute: int, sample_rate: int) -> bytes:
    speech = subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "--stdout", text],
                            check=True, capture_output=True).stdout
    # -R: sox dithers when it resamples, from a random seed unless told; repeatable, every
    # run hears the same audio (a test's words once changed from run to run).
    return subprocess.run(
        ["sox", "-q", "-R", "-t", "wav", "-", "-r", str(sample_rate), "-c", "1", "-b", "16",
         "-e", "signed-integer", "-t", "raw", "-"],
        input=speech, check=True, capture_output=True).stdout


def synthesize(text: str, *, voice: str = "en-us", words_per_minute: int = 150,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """`text` spoken by espeak-ng as mono PCM16 at `sample_rate` (int16 array)."""
    return np.frombuffer(_synthesize(text, voice, words_per_minute, sample_rate), dtype="<i2").copy()


def to_float(pcm16: np.ndarray) -> np.ndarray:
    """PCM16 -> float32 in [-1, 1), the models' input."""
    return (np.asarray(pcm16, dtype=np.float32) / 32768.0).astype(np.float32)


def whole_file_text(grpc_url: str, pcm16: np.ndarray, model: str = "whisper_asr") -> str:
    """The whole recording decoded at once by the served ASR model (no streaming): what a
    streamed transcript is held to."""
    import tritonclient.grpc as grpcclient
    audio = to_float(pcm16)[None]
    inputs = [grpcclient.InferInput("AUDIO", list(audio.shape), "FP32"), grpcclient.InferInput("LENGTH", [1], "INT32"),
              grpcclient.InferInput("PROMPT", [1], "BYTES")]
    inputs[0].set_data_from_numpy(audio)
    inputs[1].set_data_from_numpy(np.array([audio.shape[1]], np.int32))
    inputs[2].set_data_from_numpy(np.array([b""], dtype=object))
    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        return client.infer(model, inputs).as_numpy("TEXT")[0].decode()
    finally:
        client.close()


def silence(seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    return np.zeros(int(round(seconds * sample_rate)), dtype=np.int16)


def noise(seconds: float, dbfs: float = -50.0, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """White noise at a given RMS level (for 'no speech here' checks)."""
    rms = 32768.0 * 10 ** (dbfs / 20)
    samples = np.random.default_rng(seed).normal(0.0, rms, int(seconds * sample_rate))
    return np.clip(samples, -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, pcm16: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    path = Path(path)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.asarray(pcm16, dtype="<i2").tobytes())
    return path


_NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
            "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten"}


def normalize_words(text: str) -> list[str]:
    """Lowercase words without punctuation; lone digits spelled out (Whisper writes '9')."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return [_NUMBERS.get(w, w) for w in (w.strip("'") for w in words) if w]


def word_edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count): Levenshtein over words."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1], len(ref)


def wer(references: list[str] | str, hypotheses: list[str] | str) -> float:
    """Word error rate over all pairs together (total edits / total reference words)."""
    if isinstance(references, str):
        references, hypotheses = [references], [hypotheses]  # type: ignore[list-item]
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = 0
    for ref, hyp in zip(references, hypotheses):
        e, n = word_edits(ref, hyp)
        edits, words = edits + e, words + n
    return edits / max(words, 1)
