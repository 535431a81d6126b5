"""A model's network compiled by PyTorch for CPU inference at one tile shape, once per job and model.

torch.jit.optimize_for_inference runs oneDNN convolutions with prepacked weights and keeps activations in oneDNN's
layout between layers. For the smoke presets' small networks on one thread a tile runs about 3-4x faster than with
the eager network (bench_predict_volume.py); the float32 logits differ in rounding only (about 1e-5).

The trace sees the weights as constants (``WeightsAsConstants``). Tracing the network as a module would script
each of its submodules (~600 in a flavor network) only for optimize_for_inference to freeze them into constants
again: 0.95 s per model load, against 0.25 s this way (measured, flavor smoke network, one thread). The compiled
network computes the same logits either way (tests/test_pseudolabel_forward.py).
"""

from __future__ import annotations

import logging
import weakref

import torch

log = logging.getLogger(__name__)

# predictor -> (input shape, compiled network): traced once per job and tile shape, not per volume; dropped with the
# predictor (nnU-Net's object is left as nnU-Net made it)
COMPILED = weakref.WeakKeyDictionary()


class WeightsAsConstants(torch.nn.Module):
    """Calls `network` without registering it as a submodule: a trace of this module records the network's
    operations with its weights as constants, which is what freezing (optimize_for_inference) makes of them."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        vars(self)["network"] = network  # outside nn.Module's registry on purpose (module docstring)

    def forward(self, x):
        return self.network(x)


def tile_network(predictor, tile_shape):
    """The predictor's network compiled for inputs of `tile_shape` (channels and patch), kept in ``COMPILED``;
    where PyTorch cannot compile the network, the eager network (in eval mode)."""
    shape = (1, *(int(n) for n in tile_shape))
    cached = COMPILED.get(predictor)
    if cached is not None and cached[0] == shape:
        return cached[1]
    network = predictor.network.eval()
    requires_grad = [p.requires_grad for p in network.parameters()]
    try:
        network.requires_grad_(False)  # a trace makes constants only of tensors without grad
        with torch.no_grad():
            traced = torch.jit.trace(WeightsAsConstants(network), torch.zeros(shape), check_trace=False)
            compiled = torch.jit.optimize_for_inference(traced)
    except Exception as exc:  # TorchScript's coverage varies with layers and versions; eager is always right
        log.warning("network not compiled for CPU inference (%s: %s); running it eagerly", type(exc).__name__,
                    " ".join(str(exc).split())[:500])
        compiled = network
    finally:
        for parameter, flag in zip(network.parameters(), requires_grad):
            parameter.requires_grad_(flag)
    COMPILED[predictor] = (shape, compiled)
    return compiled
