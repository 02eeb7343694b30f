"""Small non-NB201 networks on which a per-sample-gradient engine can go wrong (issue 14, item 3).

Each takes CIFAR-shaped images (N, 3, 32, 32) and returns (N, 10) logits. Tokens: an 8x8-patch
convolution makes 16 tokens of width 8, so with a batch of 16 the sequence length equals the batch size
(a layer on sequence-first input then has dim 0 == N: a shape check alone cannot tell).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

E = 8


class Tokens(nn.Module):
    def __init__(self, patch: int = 8):
        super().__init__()
        self.patch = nn.Conv2d(3, E, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch(x).flatten(2).transpose(1, 2)  # (N, L, E)


class SeqFirstLinear(nn.Module):
    """A Linear on (L, N, E) input: nn.Transformer's default layout."""

    def __init__(self, patch: int = 8):
        super().__init__()
        self.tokens = Tokens(patch)
        self.mix = nn.Linear(E, E)
        self.head = nn.Linear(E, 10)

    def forward(self, x):
        h = self.tokens(x).transpose(0, 1)  # (L, N, E)
        h = torch.tanh(self.mix(h))
        return self.head(h.mean(0))


class Attention(nn.Module):
    """nn.MultiheadAttention: its out_proj (an nn.Linear) is applied with F.linear, not called."""

    def __init__(self):
        super().__init__()
        self.tokens = Tokens()
        self.attn = nn.MultiheadAttention(E, 2, batch_first=True)
        self.head = nn.Linear(E, 10)

    def forward(self, x):
        h = self.tokens(x)
        h, _ = self.attn(h, h, h, need_weights=False)
        return self.head(h.mean(1))


class FunctionalBatchNorm(nn.Module):
    """F.batch_norm in training mode called directly (no nn.BatchNorm module)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        h = F.batch_norm(self.conv1(x), None, None, training=True)
        h = torch.relu(self.conv2(torch.relu(h)))
        return self.head(h.mean((2, 3)))


class LearnedQuery(nn.Module):
    """A Linear on a learned query (its input does not depend on the batch)."""

    def __init__(self, queries: int = 4):
        super().__init__()
        self.tokens = Tokens()
        self.query = nn.Parameter(torch.randn(queries, E))
        self.qproj = nn.Linear(E, E)
        self.head = nn.Linear(E, 10)

    def forward(self, x):
        keys = self.tokens(x)  # (N, L, E)
        q = self.qproj(self.query)  # (Q, E)
        weights = torch.softmax(torch.einsum("qe,nle->nql", q, keys), -1)
        return self.head(torch.einsum("nql,nle->ne", weights, keys))


class PartialDetach(nn.Module):
    """A conv behind a partial .detach(): its weight still gets gradient from the loss."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        h = self.conv1(x)
        h = torch.relu(self.conv2(torch.relu(h).detach())) + h
        return self.head(torch.relu(h).mean((2, 3)))


class TiedLinear(nn.Module):
    """One weight tied across two Linear modules."""

    def __init__(self):
        super().__init__()
        self.tokens = Tokens()
        self.a = nn.Linear(E, E)
        self.b = nn.Linear(E, E)
        self.b.weight = self.a.weight
        self.head = nn.Linear(E, 10)

    def forward(self, x):
        h = self.tokens(x).mean(1)
        return self.head(torch.tanh(self.b(torch.tanh(self.a(h)))))


class EncoderLayer(nn.Module):
    """nn.TransformerEncoderLayer in its default sequence-first layout (dropout off)."""

    def __init__(self):
        super().__init__()
        self.tokens = Tokens()
        self.layer = nn.TransformerEncoderLayer(E, 2, dim_feedforward=16, dropout=0.0)
        self.head = nn.Linear(E, 10)

    def forward(self, x):
        h = self.layer(self.tokens(x).transpose(0, 1))  # (L, N, E)
        return self.head(h.mean(0))


CASES = {
    "seq_first_linear": SeqFirstLinear,
    "seq_first_linear_L4": lambda: SeqFirstLinear(patch=16),
    "multihead_attention": Attention,
    "functional_batch_norm": FunctionalBatchNorm,
    "learned_query": LearnedQuery,
    "partial_detach": PartialDetach,
    "tied_weight": TiedLinear,
    "transformer_encoder_layer": EncoderLayer,
}


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return CASES[name]()
