"""The fused token NLL against PyTorch's cross entropy, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from fairseq_svae.token_nll import token_nll


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_token_nll_equals_cross_entropy_with_gradients(dtype):
    torch.manual_seed(0)
    logits = (torch.randn(37, 503, dtype=dtype) * 5).requires_grad_()
    target = torch.randint(0, 503, (37,))
    weights = torch.rand(37, dtype=dtype)  # a non-uniform upstream gradient

    expected = F.cross_entropy(logits, target, reduction="none")
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits)
    got = token_nll(logits, target)
    (got_grad,) = torch.autograd.grad((got * weights).sum(), logits)

    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), expected.double(), atol=1e-4)
    assert torch.allclose(got_grad.double(), expected_grad.double(), atol=1e-6)


def test_token_nll_is_stable_for_extreme_logits():
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]])
    nll = token_nll(logits, torch.tensor([2, 1]))
    assert torch.allclose(nll, torch.tensor([2000.0, 1.0986123]))


def test_token_nll_rejects_misshaped_input():
    with pytest.raises(ValueError, match="expects logits"):
        token_nll(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))


def test_an_underflowing_target_probability_keeps_exact_loss_and_gradient():
    # The target's probability (e^-200) underflows fp32's softmax; the NLL and its gradient
    # must still be those of cross_entropy, computed in fp64.
    logits = torch.tensor([[200.0, 0.0, 1.0], [0.5, 0.2, 0.1]], requires_grad=True)
    target = torch.tensor([1, 0])
    nll = token_nll(logits, target)
    (grad,) = torch.autograd.grad(nll.sum(), logits)
    reference = logits.detach().double().requires_grad_()
    expected = torch.nn.functional.cross_entropy(reference, target, reduction="none")
    (expected_grad,) = torch.autograd.grad(expected.sum(), reference)
    assert torch.allclose(nll.double(), expected, atol=1e-4)
    assert torch.allclose(grad.double(), expected_grad, atol=1e-6)
