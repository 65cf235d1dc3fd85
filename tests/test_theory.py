"Property-based checks of the theory statements (lsnoise.theory) over random class counts, rates, data and logits."
import math
import numpy as np
import torch
from hypothesis import given, strategies as st, assume

from lsnoise.noise import transition_matrix
from lsnoise.smearing import smoothed_targets, bc_equivalent_alpha
from lsnoise.losses import ls_ce, backward_ce, forward_ce
from lsnoise.theory import (all_class_loss, omega, ls_penalty_weight, ls_optimal_gap, least_squares, logistic_losses,
                            logistic_losses_closed_form)

def logits(seed, N, L, scale):
    return torch.randn(N, L, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale

@given(st.integers(0, 10**6), st.integers(1, 64), st.integers(2, 60), st.floats(0, 0.95), st.sampled_from([0.1, 1.0, 30.0]))
def test_sign_story(seed, N, L, a, scale):
    "LS adds, BC subtracts, a multiple of the all-class loss."
    x = logits(seed, N, L, scale)
    y = torch.randint(0, L, (N,), generator=torch.Generator().manual_seed(seed + 1))
    ce, S = ls_ce(x, y, 0.0, 'none'), all_class_loss(x)
    tol = 1e-9 * (1 + scale * L)
    assert torch.allclose(backward_ce(x, y, transition_matrix('uniform', L, a), 'none'), (ce - a / L * S) / (1 - a), atol=tol / (1 - a))
    assert torch.allclose(ls_ce(x, y, a, 'none'), (1 - a) * (ce + ls_penalty_weight(L, a) * S), atol=tol)

@given(st.integers(2, 200), st.floats(0.001, 1.0), st.integers(0, 199))
def test_ls_optimum_is_stationary_with_the_closed_form_gap(L, alpha, y):
    "At f = log(smoothed target) the LS gradient vanishes and the gap is log(1 + L(1 - alpha)/alpha)."
    y = y % L
    f = torch.log(torch.as_tensor(smoothed_targets([y], L, alpha)))
    f.requires_grad_()
    ls_ce(f, torch.tensor([y]), alpha).backward()
    assert f.grad.abs().max() < 1e-12
    others = torch.cat([f[0, :y], f[0, y + 1:]]).detach()
    assert torch.allclose(f[0, y].detach() - others, torch.full_like(others, ls_optimal_gap(L, alpha)), atol=1e-9)

@given(st.integers(0, 10**6), st.integers(20, 200), st.integers(1, 6), st.integers(2, 8), st.floats(-2, 1))
def test_least_squares_shrinkage(seed, N, D, L, alpha):
    assume(N > D + 2)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) + rng.normal(size=D)
    X -= X.mean(0)
    y = rng.integers(0, L, N)
    W, Wbar = least_squares(X, np.eye(L)[y]), least_squares(X, smoothed_targets(y, L, alpha))
    assert np.allclose(Wbar, (1 - alpha) * W, atol=1e-8 * (1 + np.abs(W).max()))

@given(st.integers(0, 10**6), st.integers(1, 50), st.integers(1, 50), st.sampled_from([0.01, 1.0, 100.0]))
def test_omega_lower_bound(seed, N, L, scale):
    x = logits(seed, N, L, scale)
    assert (all_class_loss(x) >= L * math.log(L) - 1e-9 * (1 + scale * L)).all()
    equal = x[:, :1].expand(N, L)
    assert torch.allclose(all_class_loss(equal), torch.full((N,), L * math.log(L), dtype=torch.float64), atol=1e-9 * (1 + scale * L))
    assert float(omega(x)) >= L * math.log(L) - 1e-9 * (1 + scale * L)

@given(st.lists(st.floats(-30, 30), min_size=1, max_size=20), st.floats(0.01, 0.45))
def test_figure1_losses_match_closed_forms(f, rho):
    ours, closed = logistic_losses(f, rho), logistic_losses_closed_form(f, rho)
    for k in ('CE', 'LS', 'BC', 'FC'): assert np.allclose(ours[k], closed[k], rtol=1e-9, atol=1e-9)
