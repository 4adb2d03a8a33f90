"""How a text prompt enters the U-Net: a tokenizer, a tiny text encoder, cross-attention (notebook 07).

Stable Diffusion in miniature:

    "a thick seven"  --Tokenizer-->  tokens (B, L) long: <start> a thick seven <pad> ...
                     --TextEncoder-->  context (B, L, D): token + position embeddings, a small Transformer
    U-Net features (B, C, H, W) --CrossAttention(context)--> (B, C, H, W): every latent position asks
                     "which words are about me?" (queries from the image, keys and values from the words)

The tokenizer is a word list (no sub-words: every word a caption can use, see ``prompts``), so an
unknown word is refused with the list of known ones. Every prompt starts with <start>, which is
never padding: the empty prompt "" (the "no condition" of classifier-free guidance) is <start>
alone, and attention always has a word to look at. The encoder is trained with the U-Net, from
scratch; Stable Diffusion uses CLIP's text encoder, trained beforehand on image-caption pairs.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lesson.prompts import DIGIT_WORDS, SLANT_WORDS, THICKNESS_WORDS

PAD, START = "<pad>", "<start>"
VOCABULARY = (
    PAD, START, ",", "a", "the", "digit",
    *DIGIT_WORDS, *(str(d) for d in range(10)),
    *sorted({w for words in THICKNESS_WORDS + SLANT_WORDS for w in words.split()}),
)  # fmt: skip


class Tokenizer:
    """Words to token ids and back: lower case, commas are words, <start> first, <pad> to ``max_tokens``."""

    def __init__(self, vocabulary: tuple[str, ...] = VOCABULARY, max_tokens: int = 8) -> None:
        self.vocabulary, self.max_tokens = tuple(vocabulary), max_tokens
        self.ids = {word: i for i, word in enumerate(self.vocabulary)}

    def words(self, prompt: str) -> list[str]:
        """The prompt's words, checked: ValueError naming any unknown word and listing the known ones."""
        words = re.findall(r"[^\s,]+|,", prompt.lower())
        unknown = [w for w in words if w not in self.ids or w in (PAD, START)]
        if unknown:
            known = " ".join(w for w in self.vocabulary if w not in (PAD, START))
            raise ValueError(f"unknown word(s) {', '.join(map(repr, unknown))} in the prompt {prompt!r}; "
                             f"the model knows only these words: {known}")  # fmt: skip
        if len(words) + 1 > self.max_tokens:
            raise ValueError(f"the prompt {prompt!r} has {len(words)} words; at most {self.max_tokens - 1} fit")
        return words

    def encode(self, prompts: list[str] | str) -> Tensor:
        """Prompts -> (B, max_tokens) long; one string gives (1, max_tokens)."""
        prompts = [prompts] if isinstance(prompts, str) else prompts
        rows = []
        for prompt in prompts:
            ids = [self.ids[START]] + [self.ids[w] for w in self.words(prompt)]
            rows.append(ids + [self.ids[PAD]] * (self.max_tokens - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(prompts), self.max_tokens)

    def decode(self, tokens: Tensor) -> list[str]:
        """(B, L) long -> the prompts, written back with ", " after each comma."""
        out = []
        for row in tokens.tolist():
            words = [self.vocabulary[i] for i in row if self.vocabulary[i] not in (PAD, START)]
            out.append(" ".join(words).replace(" ,", ","))
        return out


class TextEncoder(nn.Module):
    """Token ids (B, L) -> context (B, L, dim) and pad mask (B, L): embeddings, Transformer layers, LayerNorm."""

    def __init__(self, vocab_size: int, max_tokens: int, dim: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.pad_id = 0  # VOCABULARY[0] is <pad>
        self.token_emb = nn.Embedding(vocab_size, dim)
        self.position_emb = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        pad = tokens == self.pad_id  # (B, L) True where there is no word
        h = self.token_emb(tokens) + self.position_emb[: tokens.shape[1]]  # (B, L, dim)
        return self.norm(self.transformer(h, src_key_padding_mask=pad)), pad


class CrossAttention(nn.Module):
    """Image features attend to the prompt's tokens: softmax(Q K^T / sqrt(d)) V, residual, per head.

    Q comes from the GroupNorm-ed features (B, HW, C); K and V from the context (B, L, D). Padding
    tokens get zero weight. The output projection starts at zero, so a fresh block is the identity.
    Set ``keep_weights = True`` to keep the last attention weights (B, heads, HW, L) in ``weights``.
    """

    def __init__(self, ch: int, context_dim: int, groups: int, heads: int = 4) -> None:
        super().__init__()
        if ch % heads:
            raise ValueError(f"{heads} heads must divide the {ch} channels")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.q = nn.Linear(ch, ch)
        self.kv = nn.Linear(context_dim, 2 * ch)
        self.out = nn.Linear(ch, ch)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.keep_weights, self.weights = False, None

    def forward(self, x: Tensor, context: Tensor, pad: Tensor) -> Tensor:
        """x: (B, C, H, W); context: (B, L, D); pad: (B, L) bool -> (B, C, H, W)."""
        B, C, H, W = x.shape
        n = self.heads
        q = self.q(self.norm(x).flatten(2).transpose(1, 2))  # (B, HW, C)
        k, v = self.kv(context).chunk(2, dim=-1)  # (B, L, C) each
        q, k, v = (z.reshape(B, -1, n, C // n).transpose(1, 2) for z in (q, k, v))  # (B, n, HW or L, C/n)
        scores = q @ k.transpose(-1, -2) / (C // n) ** 0.5  # (B, n, HW, L)
        weights = F.softmax(scores.masked_fill(pad[:, None, None, :], float("-inf")), dim=-1)
        if self.keep_weights:
            self.weights = weights.detach()
        h = (weights @ v).transpose(1, 2).reshape(B, H * W, C)  # (B, HW, C)
        return x + self.out(h).transpose(1, 2).reshape(B, C, H, W)
