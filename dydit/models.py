"""DiT and DyDiT: the reference models (masked path). Key-compatible with the official checkpoints.

DiT follows facebookresearch/DiT models.py; DyDiT adds, per block, a head router and an MLP-channel
router on the timestep embedding (Timestep-wise Dynamic Width) and a token router on the residual
stream (Spatial-wise Dynamic Token). This file is the *masked* reference: it computes everything and
multiplies by masks. The compute-skipping path that must equal it lives in fast.py; model names
("DyDiT-XL/2") and their sizes live in registry.py.
"""
import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def modulate(x, shift, scale):
    """adaLN modulation; x (N, T, D), shift/scale (N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


#################################################################################
#               Embedding Layers for Timesteps, Class Labels and Patches         #
#################################################################################

class TimestepEmbedder(nn.Module):
    """Embeds scalar timesteps into vectors: sinusoidal features, then a 2-layer MLP."""

    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        """Sinusoidal embedding of (N,) timesteps, possibly fractional -> (N, dim)."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t):
        # the sinusoid is computed in float32; the MLP runs in the weights' dtype (fp64/fp16 models too)
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Embeds class labels; index num_classes is the null class used for classifier-free guidance."""

    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        use_cfg_embedding = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels, force_drop_ids=None):
        """Replaces labels by the null class, at random (training) or where force_drop_ids == 1."""
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(self, labels, train, force_drop_ids=None):
        if (train and self.dropout_prob > 0) or (force_drop_ids is not None):
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


class PatchEmbed(nn.Module):
    """Image to patch tokens with one strided convolution (the key layout of timm's PatchEmbed)."""

    def __init__(self, input_size, patch_size, in_channels, hidden_size):
        super().__init__()
        self.num_patches = (input_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, C, H, W) -> (N, T, D)


#################################################################################
#                                 Core DiT Model                                #
#################################################################################

class Attention(nn.Module):
    """Multi-head self-attention; head_mask (N, H) zeroes whole heads before the output projection."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, head_mask=None):
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, T, hd)
        if head_mask is not None:
            out = out * head_mask[:, :, None, None]
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2; channel_mask (N, 4D) zeroes hidden channels after fc1, before GELU."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x, channel_mask=None):
        h = self.fc1(x)
        if channel_mask is not None:
            h = h * channel_mask[:, None, :]
        return self.fc2(self.act(h))


class DiTBlock(nn.Module):
    """A DiT block with adaptive layer norm zero (adaLN-Zero) conditioning."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x, c, t_emb=None, masks=None):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """The final layer of DiT: adaLN, then a linear map to patch pixels."""

    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Diffusion model with a Transformer backbone."""

    block_class = DiTBlock

    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28,
                 num_heads=16, mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True):
        super().__init__()
        self.learn_sigma = learn_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.input_size = input_size
        self.mlp_ratio = mlp_ratio

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        # Fixed sin-cos embedding, stored as a frozen parameter so the checkpoint key (and count) match.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([self.block_class(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        """DiT's init: xavier linears, sin-cos pos_embed, adaLN-Zero (every block starts as identity)."""
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
        self.apply(_basic_init)
        grid = int(self.x_embedder.num_patches ** 0.5)
        pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], grid)
        self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.constant_(self.x_embedder.proj.bias, 0)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def unpatchify(self, x):
        """(N, T, p*p*C) -> (N, C, H, W)."""
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = x.permute(0, 5, 1, 3, 2, 4)  # n h w p q c -> n c h p w q (a permute: fvcore counts no FLOPs)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def embed(self, x, t, y):
        """Tokens (N, T, D), conditioning c = t_emb + y_emb (N, D) and t_emb (N, D)."""
        x = self.x_embedder(x) + self.pos_embed
        t_emb = self.t_embedder(t)
        c = t_emb + self.y_embedder(y, self.training)
        return x, c, t_emb

    def forward(self, x, t, y):
        """x (N, C, H, W) latents, t (N,) timesteps, y (N,) labels -> (N, out_channels, H, W)."""
        x, c, t_emb = self.embed(x, t, y)
        for block in self.blocks:
            x = block(x, c, t_emb)
        return self.unpatchify(self.final_layer(x, c))

    def forward_with_cfg(self, x, t, y, cfg_scale, guided_channels=3):
        """Classifier-free guidance on a batch [cond; uncond] (DiT's API): see cfg_forward."""
        return cfg_forward(self, x, t, y, cfg_scale, guided_channels)


def cfg_forward(model_fn, x, t, y, cfg_scale, guided_channels=3):
    """Classifier-free guidance of any model_fn(x, t, y) on a batch [cond; uncond] that shares one noise.

    The one place CFG is computed (DiT, FastDyDiT and the samplers call it). DiT guides only the first
    3 of 4 latent channels (a GLIDE leftover, DiT issue #41); the paper's FID used that.
    guided_channels=None guides all of them. Returns (2B, out_channels, H, W), both halves guided.
    """
    half = x[: len(x) // 2]
    model_out = model_fn(torch.cat([half, half], dim=0), t, y)
    return combine_cfg(model_out, cfg_scale, x.shape[1] if guided_channels is None else guided_channels)


def combine_cfg(model_out, cfg_scale, guided_channels):
    """Guides the first guided_channels of a [cond; uncond] output; the rest (e.g. sigma) passes through."""
    eps, rest = model_out[:, :guided_channels], model_out[:, guided_channels:]
    cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
    half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
    return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)


#################################################################################
#                        DyDiT: routers and dynamic blocks                      #
#################################################################################

@dataclass
class BlockMasks:
    """Binary masks of one block: heads (N, H), channel groups (N, H), tokens (N, T); 1 = computed."""
    heads: torch.Tensor
    channels: torch.Tensor
    tokens: torch.Tensor


def gumbel_sigmoid_ste(logits, tau=5.0, threshold=0.5, noise=1.0):
    """Hard 0/1 in the forward pass, gradient of sigmoid((logits + noise * (g1 - g2)) / tau) in the backward.
    The hard decision keeps with probability sigmoid(logits) (noise 1), or is the eval decision logits > 0
    (noise 0); tau only shapes the gradient."""
    u1, u2 = torch.rand_like(logits), torch.rand_like(logits)
    g1, g2 = -torch.log(-torch.log(u1 + 1e-10) + 1e-10), -torch.log(-torch.log(u2 + 1e-10) + 1e-10)
    soft = torch.sigmoid((logits + noise * (g1 - g2)) / tau)
    hard = (soft > threshold).to(soft.dtype)
    return hard - soft.detach() + soft


def binarize(logits, training, tau=5.0, noise=1.0):
    """Router logits -> masks: Gumbel-sigmoid straight-through in training (its noise scaled by `noise`),
    sigmoid > 0.5 in eval."""
    if training:
        return gumbel_sigmoid_ste(logits, tau, noise=noise)
    return (logits > 0).to(logits.dtype)


class WidthRouter(nn.Module):
    """Scores H groups from the timestep embedding; group 0 is always on (H-1 learned outputs)."""

    def __init__(self, hidden_size, num_groups):
        super().__init__()
        self.router = nn.Linear(hidden_size, num_groups - 1)
        self.noise = 1.0  # the training masks' Gumbel noise scale (DyDiT.set_router_noise)

    def forward(self, t_emb, training):
        mask = binarize(self.router(t_emb), training, noise=self.noise)  # (N, H-1)
        return torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # (N, H)


class TokenRouter(nn.Module):
    """Scores each token from the (unnormalized) residual stream after the attention residual."""

    def __init__(self, hidden_size):
        super().__init__()
        self.mlp_head = nn.Sequential(nn.Linear(hidden_size, hidden_size // 16), nn.ReLU(),
                                      nn.Linear(hidden_size // 16, 1))
        self.noise = 1.0  # the training masks' Gumbel noise scale (DyDiT.set_router_noise)

    def forward(self, x, training):
        return binarize(self.mlp_head(x).squeeze(-1), training, noise=self.noise)  # (N, T)


class DyDiTBlock(DiTBlock):
    """DiT block with a head router, an MLP-channel router and a token router (masked reference)."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
        super().__init__(hidden_size, num_heads, mlp_ratio)
        self.attn_rate = WidthRouter(hidden_size, num_heads)
        self.mlp_rate = WidthRouter(hidden_size, num_heads)  # MLP hidden split into num_heads groups
        self.token_selection = TokenRouter(hidden_size)

    def width_masks(self, t_emb):
        """(heads, channel groups) masks, each (N, H), from the timestep embedding alone."""
        return self.attn_rate(t_emb, self.training), self.mlp_rate(t_emb, self.training)

    def forward(self, x, c, t_emb=None, masks=None, record=None):
        """masks: a BlockMasks overriding the routers (any field None = use the router)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        heads, channels = self.width_masks(t_emb)
        if masks is not None:
            heads = heads if masks.heads is None else masks.heads.to(x.dtype)
            channels = channels if masks.channels is None else masks.channels.to(x.dtype)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), heads)
        tokens = self.token_selection(x, self.training)
        if masks is not None and masks.tokens is not None:
            tokens = masks.tokens.to(x.dtype)
        channel_mask = channels.repeat_interleave(self.mlp.fc1.out_features // channels.shape[1], dim=1)
        mlp_out = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp), channel_mask)
        x = x + tokens.unsqueeze(-1) * gate_mlp.unsqueeze(1) * mlp_out  # skipped tokens bypass the MLP
        if record is not None:
            record.append(BlockMasks(heads, channels, tokens))
        return x


class DyDiT(DiT):
    """DiT with Timestep-wise Dynamic Width and Spatial-wise Dynamic Token."""

    block_class = DyDiTBlock
    is_dynamic = True  # the training objective's protocol (dydit.train_step): routers, FLOPs loss, complete model

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.complete_model = False  # True: run the full-width DiT path, routers unused

    def set_router_noise(self, scale: float):
        """Scales the Gumbel noise of every router's training masks (1: the official recipe; 0: the training masks
        are the eval decision, logit > 0, with the same straight-through gradient). Not saved: a training run sets
        it each step."""
        for block in self.blocks:
            for router in (block.attn_rate, block.mlp_rate, block.token_selection):
                router.noise = float(scale)

    def training_flops_ratio(self, record, y=None):
        """Per sample F_dyn / F_static of one forward's masks (dydit.flops.block_flops_ratio), (N,)."""
        from dydit.flops import block_flops_ratio
        return block_flops_ratio(self, record)

    def initialize_weights(self):
        """DiT's init, then routers that keep everything on: zero weights, biases 15 (width), 35 (tokens)."""
        super().initialize_weights()
        for block in self.blocks:
            for router in (block.attn_rate.router, block.mlp_rate.router):
                nn.init.zeros_(router.weight)
                nn.init.constant_(router.bias, 15.0)
            nn.init.zeros_(block.token_selection.mlp_head[2].weight)
            nn.init.constant_(block.token_selection.mlp_head[2].bias, 35.0)

    def forward(self, x, t, y, masks: Optional[List[BlockMasks]] = None, record=None):
        """As DiT.forward; masks (one BlockMasks per block) override the routers; record collects masks."""
        x, c, t_emb = self.embed(x, t, y)
        for i, block in enumerate(self.blocks):
            if self.complete_model:  # the plain DiT block: full width, routers not run
                x = DiTBlock.forward(block, x, c)
            else:
                x = block(x, c, t_emb, None if masks is None else masks[i], record)
        return self.unpatchify(self.final_layer(x, c))


@torch.no_grad()
def randomize_(model: nn.Module, seed=0, std=0.02):
    """Random normal weights everywhere but pos_embed (a DiT at init is the identity: useless for
    benchmarks and equivalence tests). Returns the model."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name != "pos_embed":
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


#################################################################################
#                   Sine/Cosine Positional Embedding Functions                  #
#################################################################################

def get_2d_sincos_pos_embed(embed_dim, grid_size):
    """(grid_size*grid_size, embed_dim) fixed 2-D sin-cos embedding (MAE's layout, as DiT)."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    """(M, embed_dim) sin-cos features of positions pos (any shape, flattened to M)."""
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
