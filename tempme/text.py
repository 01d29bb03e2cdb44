"""The CLIP text encoder over short captions: 32 tokens, the EOT token's feature."""
from __future__ import annotations

import torch
from torch import nn


class TextEncoder(nn.Module):
    def __init__(self, clip: nn.Module, context: int):
        super().__init__()
        if context > clip.positional_embedding.shape[0]:
            raise ValueError(f"text context {context} exceeds the backbone's {clip.positional_embedding.shape[0]}")
        self.context = context
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L<=context] (EOT = the highest id in each row) -> [B, D] features, not normalised."""
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        for block in self.transformer.resblocks:
            attended, _ = block.attn(block.ln_1(x), causal=True)
            x = x + block.ls_1(attended)
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = self.ln_final(x)
        eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(eot)
        return eot @ self.text_projection
