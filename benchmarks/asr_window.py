"""Whisper's decode window on real human speech: WER, looped transcripts and cost.

    PYTHONPATH=contract:operator:worker python benchmarks/asr_window.py [--quick]

Decodes every recording of tests/human_speech.py (alsa-utils' channel names, asterisk
prompts of 0.7-25 s) whole, one at a time, with speechops_worker.asr.WhisperAsr, once per
setting: each row followed by a 2 s silent tail only (the old default), then padded with
silence to a 5, 10, 15 and 30 s window (30 s is Whisper's own input); greedy and beam 2.
Prints WER, how many transcripts repeat a phrase ("Rear Center, Rear Center"), and the
decode time as a ratio to the 2 s tail's greedy run in the same process. The machine is
shared: compare ratios, rerun for absolutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import human_speech  # noqa: E402
import speech  # noqa: E402
from speechops_worker.asr import DecodeOptions, WhisperAsr  # noqa: E402

SETTINGS = [("2 s tail", dict(window_s=0.0, tail_silence_s=2.0)),
            ("5 s window", dict(window_s=5.0)), ("10 s window", dict(window_s=10.0)),
            ("15 s window", dict(window_s=15.0)), ("30 s window", dict(window_s=30.0))]


def decode_all(asr: WhisperAsr, clips) -> tuple[list[str], float]:
    began = time.process_time()
    texts = [asr.transcribe(speech.to_float(c.pcm16)[None], np.array([len(c.pcm16)]), [""])[0].text for c in clips]
    return texts, time.process_time() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="greedy only")
    args = parser.parse_args(argv)
    if not human_speech.have_all():
        print("needs alsa-utils and asterisk-core-sounds-en-wav (scripts/install.sh)")
        return 1
    clips = human_speech.clips()
    asr = WhisperAsr(threads=2)
    print(f"{len(clips)} recordings, {sum(c.seconds for c in clips):.0f} s of speech; "
          f"CPU seconds (process time) per setting")
    print(f"{'setting':<12} {'beam':>4} {'WER':>6} {'looped':>7} {'CPU s':>7} {'x 2 s tail':>11}")
    base = None
    for beam in ([1] if args.quick else [1, 2]):
        for name, changes in SETTINGS:
            asr.options = DecodeOptions(beam_size=beam, **changes)
            texts, cpu = decode_all(asr, clips)
            base = base or cpu
            looped = [t for t in texts if human_speech.repeated_phrase(t)]
            wer = speech.wer([c.reference for c in clips], texts)
            print(f"{name:<12} {beam:>4} {wer:6.3f} {len(looped):7d} {cpu:7.2f} {cpu / base:10.2f}x"
                  + (f"   e.g. {looped[0]!r}" if looped else ""), flush=True)
    return 0


if __name__ == "__main__":
    from report import run_and_report
    sys.exit(run_and_report("asr-window", main))
