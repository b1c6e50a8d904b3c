"""The numpy MiniLM encoder reproduces sentence-transformers' all-MiniLM-L6-v2 embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.local_agent.speech import SentenceEmbedder, SpeechModels

pytestmark = pytest.mark.speech


def test_reproduces_the_reference_similarity_matrix(speech_models: SpeechModels) -> None:
    # The example in the sentence-transformers documentation ("Quickstart") for all-MiniLM-L6-v2, printed there as
    # tensor([[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]]). Any slip in the
    # tokenizer set-up, weight layout, GELU, masking or pooling moves these by far more than 1e-3.
    e = speech_models.embedder.embed(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    expected = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    np.testing.assert_allclose(e @ e.T, expected, atol=1e-3)


def test_rows_are_unit_length_float32(speech_models: SpeechModels) -> None:
    texts = ["hi", "what are your opening hours on a bank holiday weekend", "?"]
    e = speech_models.embedder.embed(texts)
    assert e.shape == (len(texts), SentenceEmbedder.DIM) == (3, 384)
    assert e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


def test_text_longer_than_the_model_window_is_truncated_not_rejected(speech_models: SpeechModels) -> None:
    # 600 word pieces; the position table has 512 rows and sentence-transformers stops at 256.
    long, longer = speech_models.embedder.embed(["hello " * 300, "hello " * 600])
    np.testing.assert_allclose(long, longer, atol=1e-5)  # both cut at the same 256 pieces
    assert np.linalg.norm(longer) == pytest.approx(1.0, abs=1e-5)


def test_padding_in_a_batch_does_not_change_an_embedding(speech_models: SpeechModels) -> None:
    short = "book a table"
    alone = speech_models.embedder.embed([short])[0]
    batched = speech_models.embedder.embed([short, "a much longer sentence that forces several padding tokens"])[0]
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_sentences(speech_models: SpeechModels) -> None:
    a, b, c = speech_models.embedder.embed(
        ["when do you open in the morning", "what time do you start serving breakfast", "my cat likes to sleep"]
    )
    assert a @ b > 0.5
    assert a @ b > a @ c + 0.3


def test_empty_input_and_a_bare_string(speech_models: SpeechModels) -> None:
    assert speech_models.embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        speech_models.embedder.embed("not a list")
