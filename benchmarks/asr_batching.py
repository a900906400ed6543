"""Whisper rows encoded one at a time against one batched call: cost and whether a row's numbers change.

    PYTHONPATH=contract:operator:worker python benchmarks/asr_batching.py [--repeats 5]

speechops_worker.asr decodes every row of a request on its own (features, encoder and
decoder at batch size 1) so that a row's words never depend on the rows packed with it.
Before, rows of equal padded length shared one encoder call and one log-mel product.
For 15 s windows (the default) of real human speech (tests/human_speech.py), this prints:

- the CPU seconds per row of the encoder, batched (the old way) and one row per call
  (today), at 2, 4 and 8 rows, and their ratio (today / old): the cost of the fix;
- whether each row's encoder output and mel filter bank, computed batched, are bitwise
  equal to the same row computed alone (on this machine, this build).

Process time, median of interleaved repeats; the machine is shared: compare ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import human_speech  # noqa: E402
import speech  # noqa: E402
from speechops_worker.asr import WhisperAsr, log_mel, mel_filters, power_spectrogram  # noqa: E402

BATCHES = (2, 4, 8)


def windows(asr: WhisperAsr, clips, rows: int) -> np.ndarray:
    """The `rows` longest clips that fit the default window, each padded with silence to
    it as the worker pads them."""
    fit = [c for c in clips if c.seconds < asr.options.window_s - asr.options.tail_silence_s]
    chosen = sorted(fit, key=lambda c: c.seconds, reverse=True)[:rows]
    audio = np.zeros((rows, asr.padded_samples(0)), np.float32)
    for i, clip in enumerate(chosen):
        audio[i, :len(clip.pcm16)] = speech.to_float(clip.pcm16)
    return audio


def filter_bank(power: np.ndarray, *, one_product: bool) -> np.ndarray:
    """The mel filter bank over every row: as one product (before) or one per row (today)."""
    if one_product:
        return np.einsum("mf,bft->bmt", mel_filters(), power, optimize=True)
    return np.stack([mel_filters() @ row for row in power])


def cpu_seconds(work) -> float:
    began = time.process_time()
    work()
    return time.process_time() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CTranslate2 intra threads (the worker: up to 4)")
    args = parser.parse_args(argv)
    if not human_speech.have_all():
        print("needs alsa-utils and asterisk-core-sounds-en-wav (scripts/install.sh)")
        return 1
    import ctranslate2
    asr = WhisperAsr(threads=args.threads)

    def encode(features: np.ndarray) -> np.ndarray:
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(features))
        return np.asarray(asr.model.encode(view, to_cpu=True))

    audio = windows(asr, human_speech.clips(), max(BATCHES))
    features = log_mel(audio)
    alone = np.concatenate([encode(features[i:i + 1]) for i in range(len(features))])
    print(f"Whisper tiny.en int8, {args.threads} threads, {audio.shape[1] / 16000:.0f} s windows of human speech, "
          f"median of {args.repeats}")
    print("CPU: encoder CPU seconds per row. Equal: rows computed batched that are bitwise equal to the same row "
          "alone (encoder output; mel filter bank as one product over the rows, as before; one product per row, "
          "as today)")
    print(f"{'rows':>4} {'batched (old)':>14} {'one per call':>13} {'ratio':>6}  {'encoder':<12} "
          f"{'bank, one product':<18} bank, per row")
    for rows in BATCHES:
        batched, single = [], []
        for _ in range(args.repeats):
            batched.append(cpu_seconds(lambda: encode(features[:rows])) / rows)
            single.append(cpu_seconds(lambda: [encode(features[i:i + 1]) for i in range(rows)]) / rows)
        together = encode(features[:rows])
        encoder_equal = sum(np.array_equal(together[i], alone[i]) for i in range(rows))
        power = power_spectrogram(audio[:rows])
        bank = {way: filter_bank(power, one_product=way) for way in (True, False)}
        bank_equal = {way: sum(np.array_equal(bank[way][i], filter_bank(power[i:i + 1], one_product=way)[0])
                               for i in range(rows)) for way in (True, False)}
        b, s = statistics.median(batched), statistics.median(single)
        print(f"{rows:>4} {b:14.3f} {s:13.3f} {s / b:5.2f}x  {encoder_equal}/{rows:<10} "
              f"{bank_equal[True]}/{rows:<14} {bank_equal[False]}/{rows}", flush=True)
    return 0


if __name__ == "__main__":
    from report import run_and_report
    sys.exit(run_and_report("asr-batching", main))
