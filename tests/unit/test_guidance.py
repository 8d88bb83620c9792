"""Classifier guidance: cond_fn = s * grad_x log p_phi(y | x_t), checked against a closed form."""

import pytest
import torch

from adm.sampling.guidance import classifier_guidance

torch.set_num_threads(1)


class LinearClassifier(torch.nn.Module):
    """logits = W x + b_t: log-softmax gradient has the closed form W_y - sum_j p_j W_j."""

    def __init__(self, dim=12, classes=5):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = torch.nn.Parameter(torch.randn(classes, dim, generator=g))
        self.seen_t = []

    def forward(self, x, t):
        self.seen_t.append(t)
        return x.flatten(1) @ self.W.T + t.float()[:, None] * 0.01


def test_scale_zero_returns_none():
    assert classifier_guidance(LinearClassifier(), 0.0) is None
    assert classifier_guidance(LinearClassifier(), 0) is None


def test_gradient_closed_form_and_scale():
    clf = LinearClassifier()
    x = torch.randn(3, 3, 2, 2)
    t = torch.tensor([999, 500, 0])
    y = torch.tensor([4, 0, 2])
    with torch.no_grad():  # samplers call cond_fn under no_grad
        g1 = classifier_guidance(clf, 1.0)(x, t, y)
        g25 = classifier_guidance(clf, 2.5)(x, t, y)
    p = torch.softmax(x.flatten(1) @ clf.W.T + t.float()[:, None] * 0.01, dim=-1)
    expected = (clf.W[y] - p @ clf.W).view_as(x)
    assert torch.allclose(g1, expected, atol=1e-5)
    assert torch.allclose(g25, 2.5 * expected, atol=1e-5)
    assert g1.dtype == torch.float32 and not g1.requires_grad and not x.requires_grad
    # the classifier sees exactly the (original) timesteps it is given
    assert all(torch.equal(s, t) for s in clf.seen_t)


def test_gradients_are_per_sample():
    clf = LinearClassifier()
    x = torch.randn(4, 3, 2, 2)
    t = torch.tensor([10, 20, 30, 40])
    y = torch.tensor([1, 2, 3, 4])
    cond_fn = classifier_guidance(clf, 3.0)
    whole = cond_fn(x, t, y)
    parts = torch.cat([cond_fn(x[i : i + 1], t[i : i + 1], y[i : i + 1]) for i in range(4)])
    assert torch.allclose(whole, parts, atol=1e-6)


def test_guidance_needs_labels():
    with pytest.raises(ValueError, match="labels"):
        classifier_guidance(LinearClassifier(), 1.0)(torch.randn(1, 3, 2, 2), torch.tensor([0]), None)
