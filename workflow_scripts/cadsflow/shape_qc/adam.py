"""Adam for the shape prior (training the decoder and codes, fitting a code to a label map), without torch.optim.

Constructing any torch.optim optimizer imports torch._dynamo (torch wraps Optimizer.__init__ in _disable_dynamo,
which imports it on first use): 1.7 s of every shape-QC job (measured), about as long as the scoring of two volumes.
This is torch.optim.Adam's single-tensor algorithm (what torch runs for CPU tensors) with torch's defaults
(betas 0.9 / 0.999, eps 1e-8, no weight decay, no AMSGrad), the same operations in the same order, so its steps are
bit-identical to torch.optim.Adam(foreach=False) (tests/test_shape_qc_adam.py). A group's learning rate is its "lr",
which a caller may change between steps (as a torch LambdaLR would).
"""

from __future__ import annotations

import torch


class Adam:
    """torch.optim.Adam(groups) for the shape prior: `param_groups`, `zero_grad`, `step`."""

    def __init__(self, groups, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param_groups = [{"params": list(g["params"]), "lr": float(g["lr"])} for g in groups]
        self.betas = betas
        self.eps = eps
        self.state: dict[torch.Tensor, dict] = {}

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for group in self.param_groups:
            lr = group["lr"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state.get(param)
                if state is None:
                    state = self.state[param] = {
                        "step": torch.tensor(0.0, dtype=torch.float32),  # torch keeps the count as a float32 tensor
                        "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
                    }
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"].item()
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                step_size = lr / bias_correction1
                bias_correction2_sqrt = bias_correction2**0.5
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
                param.addcdiv_(exp_avg, denom, value=-step_size)
