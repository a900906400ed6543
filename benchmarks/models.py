"""Costs of the worker's models, in process and through the real tritonserver.

    PYTHONPATH=operator:worker python benchmarks/models.py [--quick]

Prints: Triton startup; Silero VAD cost per 32 ms chunk batched across streams against
one stream per forward call (the baseline, measured in the same run), in process and
through Triton (packed path against the sequence batcher); Whisper latency for 1/2/5 s
utterances with beam 1 and 2 and for batches of 4 and 8; WER with and without the loop
guard over voices, speeds and prompts; WER on the test sentences through Triton.
Figures on a shared 2-core machine are noisy: compare ratios, rerun for absolutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import speech  # noqa: E402
from speechops_contract.catalog import VAD_CHUNK  # noqa: E402
from speechops_worker.asr import DecodeOptions, WhisperAsr  # noqa: E402
from speechops_worker.triton import TritonServer, build_model_repository  # noqa: E402
from speechops_worker.vad import BatchedVad, load_silero_16k  # noqa: E402


def timed(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        out.append(time.perf_counter() - began)
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def vad_in_process(stream_counts: list[int], repeat: int) -> None:
    import torch
    torch.set_num_threads(1)
    model = load_silero_16k()
    print("\nSilero VAD in process (1 thread), cost per 32 ms chunk")
    print(f"{'streams':>8} {'batched':>12} {'one stream per call':>20} {'ratio':>7}")
    rng = np.random.default_rng(0)
    for n in stream_counts:
        audio = rng.normal(0, 0.05, (n, VAD_CHUNK)).astype(np.float32)
        ids = np.arange(n, dtype=np.uint64)
        batched_vad = BatchedVad(model)
        batched_vad.process(audio, ids, np.ones(n, bool), np.zeros(n, bool))
        batched = statistics.median(timed(lambda: batched_vad.process(audio, ids, np.zeros(n, bool), np.zeros(n, bool)), repeat)) / n
        single_vad = BatchedVad(model)
        singles = min(n, 50)  # the per-call cost does not depend on how many streams exist

        def one_per_call():
            for i in range(singles):
                single_vad.process(audio[i:i + 1], ids[i:i + 1], np.zeros(1, bool), np.zeros(1, bool))
        single = statistics.median(timed(one_per_call, max(3, repeat // 4))) / singles
        print(f"{n:>8} {ms(batched):>12} {ms(single):>20} {single / batched:>6.1f}x")


def vad_through_triton(client, stream_counts: list[int], repeat: int) -> None:
    import tritonclient.grpc as grpcclient

    def inputs(audio, ids, start, end):
        tensors = []
        for name, array, dtype in (("AUDIO", audio, "FP32"), ("STREAM_ID", ids, "UINT64"),
                                   ("START", start, "BOOL"), ("END", end, "BOOL")):
            t = grpcclient.InferInput(name, list(array.shape), dtype)
            t.set_data_from_numpy(array)
            tensors.append(t)
        return tensors

    print("\nSilero VAD through Triton (gRPC round trip), cost per chunk")
    print(f"{'streams':>8} {'packed request':>15} {'per chunk':>12} {'sequence batcher/chunk':>23} {'ratio':>7}")
    rng = np.random.default_rng(1)
    for n in stream_counts:
        audio = rng.normal(0, 0.05, (n, VAD_CHUNK)).astype(np.float32)
        ids = np.arange(10_000, 10_000 + n, dtype=np.uint64)
        client.infer("silero_vad", inputs(audio, ids, np.ones(n, bool), np.zeros(n, bool)))
        request = inputs(audio, ids, np.zeros(n, bool), np.zeros(n, bool))
        packed = statistics.median(timed(lambda: client.infer("silero_vad", request), repeat))
        client.infer("silero_vad", inputs(audio, ids, np.zeros(n, bool), np.ones(n, bool)))
        seq_streams = min(n, 20)
        chunk = grpcclient.InferInput("AUDIO", [1, VAD_CHUNK], "FP32")
        chunk.set_data_from_numpy(audio[:1])
        for s in range(seq_streams):
            client.infer("silero_vad_seq", [chunk], sequence_id=50_000 + s, sequence_start=True)

        def sequential():
            for s in range(seq_streams):
                client.infer("silero_vad_seq", [chunk], sequence_id=50_000 + s)
        seq = statistics.median(timed(sequential, max(3, repeat // 4))) / seq_streams
        for s in range(seq_streams):
            client.infer("silero_vad_seq", [chunk], sequence_id=50_000 + s, sequence_end=True)
        print(f"{n:>8} {ms(packed):>15} {ms(packed / n):>12} {ms(seq):>23} {seq / (packed / n):>6.1f}x")


def speech_of(seconds: float) -> np.ndarray:
    text = " ".join(speech.SENTENCES)
    audio = speech.to_float(speech.synthesize(text))
    return audio[: int(seconds * 16000)]


def asr_in_process(repeat: int) -> None:
    print("\nWhisper tiny.en in process (CTranslate2 int8, 2 threads), latency per generate call")
    for beam in (1, 2):
        asr = WhisperAsr(threads=2, options=DecodeOptions(beam_size=beam))
        cells = []
        for seconds in (1, 2, 5):
            audio = speech_of(seconds)
            cells.append(statistics.median(timed(lambda: asr.transcribe(audio[None], np.array([len(audio)]), [""]), repeat)))
        print(f"  beam {beam}: 1 s {ms(cells[0])}   2 s {ms(cells[1])}   5 s {ms(cells[2])}")
        for batch in (4, 8):
            # Different 2-5 s utterances, as streams would send them.
            rows = [speech.to_float(speech.synthesize(s))[: int((2 + i % 4) * 16000)]
                    for i, s in enumerate(speech.SENTENCES[:batch])]
            width = max(len(r) for r in rows)
            audio = np.zeros((batch, width), np.float32)
            for i, r in enumerate(rows):
                audio[i, :len(r)] = r
            lengths = np.array([len(r) for r in rows])
            total = statistics.median(timed(lambda: asr.transcribe(audio, lengths, [""] * batch), max(2, repeat // 2)))
            one_by_one = statistics.median(timed(
                lambda: [asr.transcribe(r[None], np.array([len(r)]), [""]) for r in rows], max(2, repeat // 2)))
            print(f"  beam {beam}: batch of {batch} (2-5 s): {ms(total)} = {ms(total / batch)} per utterance; "
                  f"one by one {ms(one_by_one / batch)} per utterance ({one_by_one / total:.1f}x)")


def asr_loop_guard() -> None:
    """WER of the test sentences in 3 voices x 2 speeds, each decoded alone and with the
    previous sentence as prompt (what a stream's next utterance gets), with Whisper's
    restart-loops cut and kept."""
    print("\nWhisper loop guard: 144 decodes (en-us 120/150/170/190 wpm, en-gb 150/180, prompt or not)")
    guarded = WhisperAsr(threads=2)
    unguarded = WhisperAsr(threads=2, options=DecodeOptions(loop_similarity=0))
    refs, with_guard, without, cut = [], [], [], 0
    for voice, wpm in (("en-us", 120), ("en-us", 150), ("en-us", 170), ("en-us", 190), ("en-gb", 150), ("en-gb", 180)):
        for i, text in enumerate(speech.SENTENCES):
            audio = speech.to_float(speech.synthesize(text, voice=voice, words_per_minute=wpm))
            for prompt in ("", speech.SENTENCES[i - 1]):
                kept = guarded.transcribe(audio[None], np.array([len(audio)]), [prompt])[0]
                raw = unguarded.transcribe(audio[None], np.array([len(audio)]), [prompt])[0]
                refs.append(text)
                with_guard.append(kept.text)
                without.append(raw.text)
                cut += kept.loop_dropped
    print(f"  loops cut: {cut} of {len(refs)} decodes; WER {speech.wer(refs, without):.3f} without the guard, "
          f"{speech.wer(refs, with_guard):.3f} with it")


def asr_through_triton(client) -> None:
    import tritonclient.grpc as grpcclient
    audios = [speech.to_float(speech.synthesize(s)) for s in speech.SENTENCES]
    print("\nWhisper through Triton on the test sentences")
    for model in ("whisper_asr", "whisper_asr_greedy"):
        texts, began = [], time.perf_counter()
        for audio in audios:
            tensors = []
            for name, array, dtype in (("AUDIO", audio[None], "FP32"), ("LENGTH", np.array([len(audio)], np.int32), "INT32"),
                                       ("PROMPT", np.array([b""], dtype=object), "BYTES")):
                t = grpcclient.InferInput(name, list(array.shape), dtype)
                t.set_data_from_numpy(array)
                tensors.append(t)
            texts.append(client.infer(model, tensors).as_numpy("TEXT")[0].decode())
        elapsed = (time.perf_counter() - began) / len(audios)
        seconds = np.mean([len(a) for a in audios]) / 16000
        print(f"  {model:<19} WER {speech.wer(list(speech.SENTENCES), texts):.3f} over {len(audios)} sentences, "
              f"{ms(elapsed)} per {seconds:.1f} s sentence")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and stream counts")
    args = parser.parse_args(argv)
    repeat = 5 if args.quick else 20
    counts = [1, 10, 100] if args.quick else [1, 10, 100, 1000]
    vad_in_process(counts, repeat)
    asr_in_process(3 if args.quick else 7)
    asr_loop_guard()
    with tempfile.TemporaryDirectory() as repo_dir:
        repo = build_model_repository(repo_dir)
        with TritonServer(repo) as server:
            print(f"\nTriton startup with all {len(list(Path(repo_dir).iterdir()))} models: {server.startup_s:.1f} s")
            import tritonclient.grpc as grpcclient
            client = grpcclient.InferenceServerClient(server.grpc_url)
            vad_through_triton(client, counts, repeat)
            asr_through_triton(client)
            client.close()
    return 0


if __name__ == "__main__":
    from report import run_and_report
    sys.exit(run_and_report("models", main))
