"""The shape prior's Adam (cadsflow.shape_qc.adam) is torch.optim.Adam bit for bit, without importing torch._dynamo.

Constructed problem: a small MLP and a free code tensor in two parameter groups with their own learning rates, a
learning rate changed every few steps as the prior's training changes it (torch's LambdaLR there), gradients from a
fixed random regression; after each step every parameter must equal torch's exactly.
"""

import os
import subprocess
import sys

import torch

from helpers import REPO

from cadsflow.shape_qc.adam import Adam


def _problem(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    codes = torch.nn.Parameter(torch.randn(4, 2))
    return model, codes


def _loss(model, codes, step):
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(4, 4, generator=generator)
    target = torch.randn(4, 3, generator=generator)
    return ((model(torch.cat([x, codes], dim=1)) - target) ** 2).mean() + 1e-3 * codes.square().sum()


def test_steps_equal_torch_adam_with_two_groups_and_a_changing_learning_rate():
    ours_model, ours_codes = _problem(0)
    ref_model, ref_codes = _problem(0)
    ours = Adam([{"params": ours_model.parameters(), "lr": 3e-3}, {"params": [ours_codes], "lr": 1e-2}])
    ref = torch.optim.Adam([{"params": ref_model.parameters(), "lr": 3e-3}, {"params": [ref_codes], "lr": 1e-2}],
                           foreach=False)
    schedule = torch.optim.lr_scheduler.LambdaLR(ref, lambda epoch: 0.5 ** epoch)
    bases = [g["lr"] for g in ours.param_groups]
    for step in range(30):
        epoch = step // 5
        for group, base in zip(ours.param_groups, bases):
            group["lr"] = base * 0.5 ** epoch
        assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in ref.param_groups]
        for optimizer, model, codes in ((ours, ours_model, ours_codes), (ref, ref_model, ref_codes)):
            optimizer.zero_grad()
            _loss(model, codes, step).backward()
            optimizer.step()
        if step % 5 == 4:
            schedule.step()
        for a, b in zip([*ours_model.parameters(), ours_codes], [*ref_model.parameters(), ref_codes]):
            assert torch.equal(a, b), step
    assert not torch.equal(ours_codes, _problem(0)[1])  # it did move


def test_a_parameter_without_gradient_is_left_alone():
    frozen, moving = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    optimizer = Adam([{"params": [frozen, moving], "lr": 0.1}])
    (moving * torch.tensor([1.0, -2.0, 3.0])).sum().backward()
    optimizer.step()
    assert torch.equal(frozen, torch.ones(3))
    assert torch.allclose(moving, torch.tensor([0.9, 1.1, 0.9]))  # Adam's first step: lr x sign(grad)


def test_fitting_a_code_imports_no_torch_dynamo():
    """The reason for this optimizer: torch.optim imports torch._dynamo (1.7 s of every shape-QC job)."""
    probe = ("import sys, torch; from cadsflow.shape_qc.adam import Adam; p = torch.nn.Parameter(torch.ones(2)); "
             "o = Adam([{'params': [p], 'lr': 0.1}]); p.sum().backward(); o.step(); "
             "print('torch._dynamo' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts")}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
