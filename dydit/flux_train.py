"""DyFLUX's training objective: rectified-flow matching (FLUX's) plus DyDiT's FLOPs loss, in one forward.

    objective = FluxObjective(model, image_tokens=N, text_tokens=L)    # model: FLUX with dydit.flux routers
    out = objective(latents, text, pooled, img_ids, txt_ids, sigma, noise, lambda_t=0.7)
    out["loss"].backward()

Flow matching as FLUX is trained and sampled (diffusers' FlowMatchEulerDiscreteScheduler): x_sigma = (1 - sigma) x
+ sigma noise, the model predicts the velocity noise - x at timestep sigma. The FLOPs loss is DyDiT's:
flops_weight * (mean over the batch of F_dyn / F_static - lambda_t)^2, F over the blocks' attention and MLP
(dydit.flux_flops.flops_ratio), differentiable through the routers' straight-through masks.
"""
import torch
import torch.nn as nn

from dydit.flux import dyflux_forward
from dydit.flux_flops import BlockPlan, FluxShape, flops_ratio


def plans_from_record(record) -> list:
    """One BlockPlan of (B,) fractions per block from dyflux_forward's record (masks keep their gradients)."""
    plans = []
    for m in record:
        heads = 1.0 if m.heads is None else m.heads.mean(1)
        groups = 1.0 if m.groups is None else m.groups.mean(1)
        plans.append(BlockPlan(m.tokens.mean(1), heads, groups))
    return plans


class FluxObjective(nn.Module):
    """The whole loss of one DyFLUX training step: flow matching of the dynamic path + the FLOPs loss."""

    def __init__(self, model: nn.Module, image_tokens: int, text_tokens: int, flops_weight: float = 2.0):
        super().__init__()
        self.model = model
        self.shape = FluxShape.of(model.config)
        self.image_tokens, self.text_tokens = image_tokens, text_tokens
        self.flops_weight = flops_weight

    def forward(self, latents, text, pooled, img_ids, txt_ids, sigma, noise, lambda_t=1.0, guidance=None):
        """latents, noise (B, N, C) packed; text (B, L, J); pooled (B, P); sigma (B,) in (0, 1) ->
        {"loss" (to backpropagate), "flow", "flops_loss", "flops_ratio"}."""
        s = sigma.view(-1, 1, 1).to(latents.dtype)
        x_sigma = (1 - s) * latents + s * noise
        record = []
        velocity = dyflux_forward(self.model, x_sigma, text, pooled, sigma, img_ids, txt_ids, guidance,
                                  record=record, masks=None)
        flow = (velocity - (noise - latents)).square().mean()
        plans = plans_from_record(record)
        ratio = flops_ratio(self.shape, self.image_tokens, self.text_tokens, plans)
        ratio = ratio.mean() if torch.is_tensor(ratio) else torch.tensor(float(ratio))
        flops_loss = self.flops_weight * (ratio - lambda_t) ** 2
        return {"loss": flow + flops_loss, "flow": flow.detach(), "flops_loss": flops_loss.detach(),
                "flops_ratio": ratio.detach()}
