"""SHIP under `torch.compile`: a bounded number of compilations over training, evaluation and the switch between
them, and compiled steps equal to eager ones.

The graphs are checked with dynamo's own tracing and AOTAutograd (`aot_eager`), which is what every backend starts
from; inductor's code generation takes minutes on a small CPU and is measured with `python -m shiplib bench
--compile` instead.
"""
import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

import shiplib

TOL = 1e-5


def build(**opts):
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=0)
    bank = 50 * torch.randn(20, 32, generator=torch.Generator().manual_seed(1))
    return shiplib.build_model("ship", backbone=vit, num_classes=5, pretrained=False, prompt_length=4,
                               levels=[0, 1, 2], prototypes=bank, **opts)


class CountingBackend:
    """A dynamo backend that counts the graphs it is asked to compile and runs them as AOTAutograd would."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        from torch._dynamo.backends.debugging import aot_eager

        self.graphs += 1
        return aot_eager(gm, example_inputs)


def train_step(model, forward, opt, x, y):
    model.train()
    logits, losses = forward(x, return_losses=True)
    loss = F.cross_entropy(logits, y) + model.loss_weights["pml"] * losses["pml"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return logits.detach(), losses["pml"].detach()


def evaluate(model, forward, x, inference: bool):
    model.eval()
    with torch.inference_mode() if inference else torch.no_grad():
        return forward(x).clone()


@pytest.mark.slow
def test_compilations_stay_bounded_over_training_evaluation_and_switches():
    torch._dynamo.reset()
    model, backend = build(drop_path_rate=0.3), CountingBackend()  # drop path: shared prompt rows would split
    compiled = torch.compile(model, backend=backend)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(6, 3, 32, 32), torch.arange(6) % 5
    counts = []
    for _ in range(3):
        for _ in range(2):
            train_step(model, compiled, opt, x, y)
        evaluate(model, compiled, x, inference=False)
        evaluate(model, compiled, x, inference=True)
        counts.append(backend.graphs)
    print("graphs compiled after each round:", counts)
    assert counts[0] <= 4  # one graph per mode: training, eval without gradients, eval in inference mode
    assert counts[1] == counts[2] == counts[0]  # the switches back and forth compile nothing new


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(), dict(da=False)])  # decoupled and joint attention
def test_compiled_training_and_eval_steps_equal_eager(options):
    torch._dynamo.reset()
    eager, twin = build(drop_path_rate=0.0, **options), build(drop_path_rate=0.0, **options)
    compiled = torch.compile(twin, backend="aot_eager")
    opts = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1) for m in (eager, twin)]
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4) % 5
    for _ in range(2):  # the second step runs on updated prompts
        a = train_step(eager, eager, opts[0], x, y)
        b = train_step(twin, compiled, opts[1], x, y)
        assert (a[0] - b[0]).abs().max() < TOL and (a[1] - b[1]).abs() < TOL
        for (name, p), q in zip(eager.named_parameters(), twin.parameters()):
            assert (p - q).abs().max() < TOL, name  # same gradients, so the same updated parameters
    for inference in (False, True):
        assert (evaluate(eager, eager, x, inference) - evaluate(twin, compiled, x, inference)).abs().max() < TOL
