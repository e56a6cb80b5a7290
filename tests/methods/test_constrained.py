import torch

from lit_unlearn.objectives import logit_margin


def test_logit_margin_by_hand_and_zero_at_uniform():
    logits = torch.tensor([[[1.0, 2.0, 6.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[-100, 1, 2]])  # positions 0 and 1 are scored
    expected = ((6 - 3) ** 2 + (3 - 1) ** 2) / 2
    assert logit_margin(logits, labels).item() == expected
    uniform = torch.full((2, 4, 7), 0.5)
    assert logit_margin(uniform, torch.zeros(2, 4, dtype=torch.long)).abs().max() == 0
    torch.manual_seed(0)
    assert (logit_margin(torch.randn(3, 5, 7), torch.zeros(3, 5, dtype=torch.long)) > 0).all()


def test_gradient_does_not_vanish_near_uniform_unlike_entropy():
    torch.manual_seed(0)
    vocab = 1000
    z = (1e-3 * torch.randn(1, 2, vocab)).requires_grad_()
    labels = torch.tensor([[-100, 1]])
    g_margin = torch.autograd.grad(logit_margin(z, labels).sum(), z)[0][0, 0]
    p = torch.softmax(z[0, 0], -1)
    entropy = -(p * p.log()).sum()
    g_entropy = torch.autograd.grad(-entropy, z)[0][0, 0]  # what an entropy-maximising loss would follow
    assert g_margin.norm() > 0
    # the softmax puts a 1/V factor into entropy's gradient near uniform; the margin has none
    assert g_margin.norm() > 100 * g_entropy.norm()
