"""Text helpers: stable partials (local agreement), word normalisation, word error rate.

A partial shows only the words two consecutive decodes agree on, so it does not flicker.
Words once shown are committed: the final keeps them and fills in the rest from its own
decode, so a partial never contradicts the final (whisper_streaming's local agreement).
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9']+")


def norm(word: str) -> str:
    """Case and punctuation do not count when words are compared."""
    return "".join(_WORD.findall(word.lower())).strip("'")


def words(text: str) -> list[str]:
    return [w for w in text.split() if norm(w)]


def agreed_prefix(previous: list[str], current: list[str]) -> int:
    """How many leading words two decodes share (compared normalised)."""
    n = 0
    for a, b in zip(previous, current):
        if norm(a) != norm(b):
            break
        n += 1
    return n


AGREEMENT = 3   # decodes that must agree on a word before it is shown as stable
TAIL_MARGIN = 1  # words at the end of a decode never committed (the audio may cut them)


def extend_committed(committed: list[str], earlier: list[list[str]], current: list[str]) -> list[str]:
    """Committed words after one more decode: they only ever grow.

    New words are committed when the current decode and the AGREEMENT - 1 decodes before
    it agree on them, and the current decode still starts with what was committed. The
    last word of any decode is never committed: the audio may have ended inside it.
    Whisper tiny changes its mind often in the first second of an utterance, so waiting
    for more decodes to agree trades partial latency for stability."""
    if agreed_prefix(committed, current) < len(committed):
        return committed          # the decode revised a committed word: keep ours, wait
    if len(earlier) < AGREEMENT - 1:
        return committed
    agreed = len(current) - TAIL_MARGIN
    for decode in earlier[-(AGREEMENT - 1):]:
        agreed = min(agreed, agreed_prefix(decode, current), len(decode) - TAIL_MARGIN)
    if agreed > len(committed):
        return committed + current[len(committed):agreed]
    return committed


def final_text(committed: list[str], decoded: list[str]) -> str:
    """The final: committed words first (they were shown), then the final decode's rest.

    If the final decode revised a committed word, the committed words stay and the decode
    continues after the same number of words, so the word count stays aligned."""
    return " ".join(committed + decoded[len(committed):])


def tail_words(text: str, count: int) -> str:
    """The last `count` words, carried as the prompt across a forced cut."""
    return " ".join(text.split()[-count:])


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length (normalised words)."""
    ref = [norm(w) for w in reference.split() if norm(w)]
    hyp = [norm(w) for w in hypothesis.split() if norm(w)]
    if not ref:
        return float(bool(hyp))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev_diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev_diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev_diag + (r != h))
    return row[-1] / len(ref)
