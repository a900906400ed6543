"""Real human speech with reference transcripts, from Debian packages (scripts/install.sh
installs them):

- `alsa-utils`: /usr/share/sounds/alsa/*.wav, eight short utterances ("Front Center" ...
  "Side Right"), 48 kHz, the words in the file names (GPL-2 with alsa-utils).
- `asterisk-core-sounds-en-wav` + `asterisk-core-sounds-en`: Allison Smith's telephone
  prompts, 8 kHz, from one-word prompts to a 25 s menu, each file's words in
  core-sounds-en.txt (CC-BY-SA-3.0).

Short utterances are where a streamed Whisper loops ("Try again. Try again"), so most
clips here are short. Every clip is resampled by sox to 16 kHz mono PCM16 (int16), the
same samples in every run (sox's dither seeded: -R).

Import from tests as `import human_speech`; benchmarks add tests/ to sys.path themselves.
"""

from __future__ import annotations

import functools
import gzip
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
ALSA_DIR = Path("/usr/share/sounds/alsa")
ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")

# Prompts whose words are plain (no digits spoken as key names, no sound effects), from
# 0.6 s to 25 s; a fixed list so WER figures compare run to run.
ASTERISK_SHORT = (
    "goodbye", "auth-thankyou", "please-try-again", "im-sorry", "one-moment-please",
    "call-forwarding", "vm-goodbye", "conf-locked", "cancelled", "transfer",
    "agent-loginok", "vm-msgsaved", "conf-muted", "calling", "hello-world",
)
ASTERISK_LONG = (
    "agent-alreadyon", "cannot-complete-as-dialed", "check-number-dial-again",
    "all-circuits-busy-now", "vm-nobodyavail", "conf-waitforleader", "pbx-invalid",
    "vm-newuser", "vm-instructions", "tt-allbusy", "conf-usermenu", "demo-echotest",
    "basic-pbx-ivr-main",
)


@dataclass(frozen=True)
class Clip:
    name: str
    reference: str
    pcm16: np.ndarray          # 16 kHz mono int16

    @property
    def seconds(self) -> float:
        return len(self.pcm16) / SAMPLE_RATE


def have_alsa() -> bool:
    return bool(shutil.which("sox")) and (ALSA_DIR / "Front_Center.wav").exists()


def have_asterisk() -> bool:
    return bool(shutil.which("sox")) and ASTERISK_TEXT.exists() and (ASTERISK_DIR / "goodbye.wav").exists()


def have_all() -> bool:
    return have_alsa() and have_asterisk()


@functools.lru_cache(maxsize=512)
def load_wav(path: str) -> np.ndarray:
    """Any WAV file as 16 kHz mono PCM16 (sox does the resampling)."""
    # -R seeds sox's dither: the same samples in every run (see speech._synthesize).
    raw = subprocess.run(["sox", "-q", "-R", str(path), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
                          "-e", "signed-integer", "-t", "raw", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<i2").copy()


@functools.lru_cache(maxsize=1)
def asterisk_transcripts() -> dict[str, str]:
    """{prompt name: its words} from the package's core-sounds-en.txt."""
    out = {}
    for line in gzip.open(ASTERISK_TEXT, "rt", encoding="utf-8", errors="replace"):
        match = re.match(r"^([\w-]+):\s*(.+)$", line.strip())
        if match:
            out[match.group(1)] = match.group(2).strip()
    return out


def alsa_clips() -> list[Clip]:
    """The eight alsa-utils channel names ("Front Center"), spoken by a human."""
    return [Clip(path.stem, path.stem.replace("_", " "), load_wav(str(path)))
            for path in sorted(ALSA_DIR.glob("*.wav")) if path.stem != "Noise"]


def asterisk_clips(names=ASTERISK_SHORT + ASTERISK_LONG) -> list[Clip]:
    texts = asterisk_transcripts()
    return [Clip(name, texts[name], load_wav(str(ASTERISK_DIR / f"{name}.wav"))) for name in names]


def clips() -> list[Clip]:
    """Every clip: alsa's eight, then the asterisk prompts (short, then long)."""
    return alsa_clips() + asterisk_clips()


def repeated_phrase(text: str, min_words: int = 1) -> str | None:
    """A run of words said twice in a row ("try again try again", "rear rear"), or None.
    Real prompts here never repeat a word back to back."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()
    for size in range(min_words, len(words) // 2 + 1):
        for i in range(len(words) - 2 * size + 1):
            if words[i:i + size] == words[i + size:i + 2 * size]:
                return " ".join(words[i:i + 2 * size])
    return None
