"""A text-to-image FLUX with DiT's training interface: what the text-to-image mini (issue 24) trains through
dydit.train, `model(x, t, y)` with y the prompts' token ids.

    model = TextToImageFlux(FluxTransformer2DModel(**config), text_encoder_config, image_size=(16, 32))
    v = model(x, t, token_ids)            # x (B, C, H, W), t (B,) flow time (dydit.flow: 0 noise, 1 data)

Pieces: a small text encoder trained with the model (transformers' CLIPTextModel built from a config, no hub
weights; its tokens' last hidden states are FLUX's text stream, their masked mean its pooled projection), FLUX's
transformer (dydit.flux: with DyFLUX's routers where it has them), and FLUX's 2 x 2 packing of the image into
tokens. Conventions: FLUX's sigma (1 = noise) is 1 - t and FLUX's velocity (noise - data) is minus dydit.flow's
(data - noise), so FLUX weights keep their meaning. Prompt dropout for classifier-free guidance: with probability
`text_dropout` in training a prompt becomes the empty prompt (every token PAD), drawn with torch.rand per sample
(dydit.train_step seeds it per step).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from dydit.flux import FluxMasks, dyflux_forward, has_width_routers
from dydit.flux_flops import FluxShape, flops_ratio
from dydit.flux_train import plans_from_record

PAD_ID = 0
TEXT_DROPOUT = 0.1  # as DiT's class dropout


class TextToImageFlux(nn.Module):
    """Text encoder + FLUX transformer + packing, with DiT's (x, t, y) interface and DyDiT's training hooks."""

    def __init__(self, transformer: nn.Module, text_encoder: nn.Module, image_size: Tuple[int, int], in_channels=1,
                 text_dropout=TEXT_DROPOUT):
        super().__init__()
        self.transformer, self.text_encoder = transformer, text_encoder
        self.image_size, self.in_channels, self.text_dropout = tuple(image_size), in_channels, text_dropout
        h, w = self.image_size
        if h % 2 or w % 2 or transformer.config.in_channels != 4 * in_channels:
            raise ValueError(f"FLUX packs 2 x 2 patches: an even image size and in_channels = 4 x {in_channels}")
        rows, cols = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
        self.register_buffer("img_ids", torch.stack([torch.zeros(rows.numel()), rows.flatten(), cols.flatten()],
                                                    dim=1).float(), persistent=False)
        self.complete_model = False  # True: every token, head and group on, routers not run (DyDiT's complete loss)
        self.fast = False  # the compute-skipping path (inference)

    @property
    def is_dynamic(self) -> bool:
        """DyFLUX: token routers on every block (dydit.flux)."""
        return hasattr(self.transformer.transformer_blocks[0], "token_selection")

    @property
    def image_tokens(self) -> int:
        return (self.image_size[0] // 2) * (self.image_size[1] // 2)

    def pack(self, x):
        """(B, C, H, W) -> (B, H/2 * W/2, 4 C): FLUX's 2 x 2 patches as tokens."""
        B, C, H, W = x.shape
        return x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // 2) * (W // 2), 4 * C)

    def unpack(self, tokens):
        """The inverse of pack."""
        B = tokens.shape[0]
        H, W = self.image_size
        x = tokens.view(B, H // 2, W // 2, self.in_channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(B, self.in_channels, H, W)

    def encode_text(self, ids):
        """(B, L) token ids -> (text stream (B, L, D_text), pooled (B, D_text)); PAD tokens masked, the first
        position always attended (the empty prompt is all PAD)."""
        mask = ids != PAD_ID
        mask[:, 0] = True
        hidden = self.text_encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, D)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return hidden, (hidden * weights).sum(1) / weights.sum(1)

    def forward(self, x, t, y, record: Optional[list] = None, masks=None):
        """Velocity (dydit.flow's convention) of x (B, C, H, W) at flow time t (B,) given token ids y (B, L)."""
        if self.training and self.text_dropout > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.text_dropout
            y = torch.where(drop[:, None], torch.full_like(y, PAD_ID), y)
        text, pooled = self.encode_text(y)
        txt_ids = torch.zeros(y.shape[1], 3, device=x.device)
        if self.complete_model and self.is_dynamic:
            masks = self.all_on(x.shape[0], x.device)
        velocity = dyflux_forward(self.transformer, self.pack(x), text, pooled, 1 - t, self.img_ids, txt_ids,
                                  fast=self.fast, masks=masks, record=record) if self.is_dynamic else \
            self.transformer(hidden_states=self.pack(x), encoder_hidden_states=text, pooled_projections=pooled,
                             timestep=1 - t, img_ids=self.img_ids, txt_ids=txt_ids).sample
        return -self.unpack(velocity)

    def all_on(self, batch, device):
        """Masks keeping every token (and head and group, with width routers) of every block."""
        blocks = len(self.transformer.transformer_blocks) + len(self.transformer.single_transformer_blocks)
        heads = self.transformer.config.num_attention_heads
        width = torch.ones(batch, heads, device=device) if has_width_routers(self.transformer) else None
        return [FluxMasks(torch.ones(batch, self.image_tokens, device=device), width, width)] * blocks

    def set_router_noise(self, scale: float):
        """As DyDiT.set_router_noise: the Gumbel noise of every router's training masks."""
        for block in [*self.transformer.transformer_blocks, *self.transformer.single_transformer_blocks]:
            for name in ("token_selection", "attn_rate", "mlp_rate"):
                if hasattr(block, name):
                    getattr(block, name).noise = float(scale)

    def training_flops_ratio(self, record, y) -> torch.Tensor:
        """DyDiT's per-sample F_dyn / F_static over the blocks' attention and MLP (dydit.flux_flops), (B,), of one
        forward's masks on prompts y (B, L)."""
        return flops_ratio(FluxShape.of(self.transformer.config), self.image_tokens, y.shape[1],
                           plans_from_record(record))
