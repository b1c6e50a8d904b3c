"""SpeechModels: loaded once, shared by concurrent calls, never importing torch."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.local_agent.speech import SpeechModels
from tests.support.caller_voice import caller_pcm16_16k

pytestmark = pytest.mark.speech


@pytest.mark.parametrize("kwargs", [{"cpu_threads": 0}, {"stt_workers": 0}])
def test_load_rejects_impossible_thread_counts(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SpeechModels.load(**kwargs)


def test_load_reports_its_duration_and_files(speech_models: SpeechModels) -> None:
    assert speech_models.load_seconds > 0
    assert speech_models.files.vad_onnx.is_file()
    assert (speech_models.files.whisper_dir / "model.bin").is_file()


def test_importing_the_package_loads_no_model_runtime_and_loading_needs_no_torch() -> None:
    # In a fresh interpreter: the import must stay cheap (the gateway imports it even when no call uses the local
    # agent), and the full load must work without torch (which is not installed and must never be pulled in).
    # scipy's submodules, not the bare package: numba (the resampler's kernels) imports that to check its version.
    code = (
        "import sys\n"
        "import gateway.local_agent.speech as s\n"
        "heavy = {'onnxruntime', 'faster_whisper', 'ctranslate2', 'piper', 'tokenizers', 'scipy.signal',"
        " 'scipy.special'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
        "s.SpeechModels.load()\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_shared_models_give_the_same_answers_from_concurrent_threads(speech_models: SpeechModels) -> None:
    texts = ["Could you read me the menu?", "Are your meals expensive?"]
    audio = [caller_pcm16_16k(speech_models.tts, t) for t in texts]
    sequential_text = [speech_models.stt.transcribe(a) for a in audio]
    sequential_vad = [speech_models.vad.stream().push(a) for a in audio]
    sequential_emb = speech_models.embedder.embed(texts)

    def work(i: int) -> tuple[str, list[float], np.ndarray]:
        return (
            speech_models.stt.transcribe(audio[i % 2]),
            speech_models.vad.stream().push(audio[i % 2]),
            speech_models.embedder.embed([texts[i % 2]])[0],
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(4)))
    for i, (text, vad, emb) in enumerate(results):
        assert text == sequential_text[i % 2]
        np.testing.assert_allclose(vad, sequential_vad[i % 2], atol=1e-6)
        np.testing.assert_allclose(emb, sequential_emb[i % 2], atol=1e-5)
