"Property-based tests (hypothesis) of the noise models, smearing identities and losses, over shapes, classes, rates and logits."
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st, assume

from lsnoise.noise import (NOISE_KINDS, transition_matrix, corrupt_labels, realised_transition, check_transition,
                           expected_flip_rate, flip_rate)
from lsnoise.smearing import ls_matrix, bc_matrix, bc_equivalent_alpha, smoothed_targets
from lsnoise.losses import smeared_ce, ls_ce, backward_ce, forward_ce, np_smeared_ce, np_forward_ce

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
rates = st.floats(0, 1, allow_nan=False)
alphas = st.floats(-3, 1, allow_nan=False)
kinds_L = st.sampled_from([('uniform', None), ('flip', None), ('pairflip', None), ('cifar10', 10), ('cifar100', 100), ('cifar100-blocks', 100)])

def random_T(rng, L, diag=0.0):
    return diag * np.eye(L) + (1 - diag) * rng.dirichlet(np.ones(L), L)

# ---------------------------------------------------------------- noise

@given(kinds_L, st.integers(2, 30), rates)
def test_transition_matrix_is_row_stochastic(kind_L, L, rho):
    kind, fixed = kind_L
    L = fixed or L
    T = transition_matrix(kind, L, rho)
    assert T.dtype == np.float64 and T.shape == (L, L)
    assert (T >= 0).all() and np.allclose(T.sum(1), 1, atol=1e-12)
    check_transition(T, L)

@given(st.integers(2, 50), rates)
def test_symmetric_kinds_flip_rates(L, rho):
    assert math.isclose(expected_flip_rate(transition_matrix('uniform', L, rho)), rho * (L - 1) / L, abs_tol=1e-12)
    assert math.isclose(expected_flip_rate(transition_matrix('flip', L, rho)), rho, abs_tol=1e-12)
    assert math.isclose(expected_flip_rate(transition_matrix('pairflip', L, rho)), rho, abs_tol=1e-12)

@given(st.integers(1, 12), st.integers(0, 300), st.integers(0, 2**31 - 1), st.sampled_from([np.int8, np.int32, np.int64, np.uint8]))
def test_corrupt_labels_shape_dtype_determinism(L, n, seed, dtype):
    rng = np.random.default_rng(seed)
    T = random_T(rng, L)
    if L == 1: T = np.ones((1, 1))
    else: T[:, 0] = 0; T /= T.sum(1, keepdims=True)   # class 0 can never be drawn...
    y = rng.integers(0, L, n).astype(dtype)
    z = corrupt_labels(y, T, seed)
    assert z.shape == y.shape and z.dtype == y.dtype
    assert ((0 <= z) & (z < L)).all()
    if L > 1: assert (z != 0).all()             # ...and is not
    assert np.array_equal(z, corrupt_labels(y, T, seed))

@given(st.integers(0, 1000))
def test_corrupt_labels_torch_in_torch_out(seed):
    y = torch.randint(0, 10, (4, 25), generator=torch.Generator().manual_seed(seed), dtype=torch.int16)
    z = corrupt_labels(y, transition_matrix('uniform', 10, 0.5), seed)
    assert isinstance(z, torch.Tensor) and z.dtype == torch.int16 and z.shape == y.shape

@pytest.mark.parametrize('kind,L', [('uniform', 10), ('flip', 10), ('pairflip', 7), ('cifar10', 10), ('cifar100', 100)])
def test_corrupt_labels_follows_T(kind, L):
    "The realised transition matrix converges to T: within 5 binomial standard errors everywhere."
    n = 400_000
    clean = np.random.default_rng(1).integers(0, L, n)
    T = transition_matrix(kind, L, 0.37)
    noisy = corrupt_labels(clean, T, seed=3)
    That = realised_transition(clean, noisy, L)
    counts = np.bincount(clean, minlength=L)[:, None]
    se = np.sqrt(T * (1 - T) / counts) + 1e-12
    assert (np.abs(That - T) <= 5 * se + 1e-9).all()
    assert abs(flip_rate(clean, noisy) - expected_flip_rate(T)) < 0.005

def test_corrupt_labels_matches_a_per_example_loop():
    "Same draw as the obvious loop: one uniform number per example, first cumulative probability above it."
    rng = np.random.default_rng(0)
    L, n = 13, 5000
    T = random_T(rng, L, 0.5)
    y = rng.integers(0, L, n)
    z = corrupt_labels(y, T, seed=11)
    u = np.random.default_rng(11).integers(0, 1 << 40, n, dtype=np.int64)
    cum = np.rint(np.cumsum(T, 1) * (1 << 40)).astype(np.int64); cum[:, -1] = 1 << 40
    loop = np.array([np.searchsorted(cum[yi], ui, side='right') for yi, ui in zip(y, u)])
    assert np.array_equal(z, loop)

@pytest.mark.parametrize('bad,msg', [
    (lambda: transition_matrix('uniform', 10, -0.1), 'rho must be in [0, 1]'),
    (lambda: transition_matrix('uniform', 10, 2), 'rho must be in [0, 1]'),
    (lambda: transition_matrix('gaussian', 10, 0.1), 'kind must be one of'),
    (lambda: transition_matrix('uniform', 0, 0.1), 'num_classes must be an integer'),
    (lambda: corrupt_labels([0, 1, 5], np.eye(3), 0), 'labels must be class indices in [0, 3), found 5'),
    (lambda: corrupt_labels([0, -1], np.eye(3), 0), 'found -1'),
    (lambda: corrupt_labels([0, 1], np.eye(2)[:, :1], 0), 'square'),
    (lambda: corrupt_labels([0, 1], [[0.5, 0.6], [0, 1]], 0), 'row-stochastic'),
    (lambda: corrupt_labels([0, 1], np.eye(2), 1.5), 'seed must be an integer'),
])
def test_noise_bad_input(bad, msg):
    with pytest.raises(ValueError, match=None) as e: bad()
    assert msg in str(e.value)

# ---------------------------------------------------------------- smearing identities

@given(st.integers(1, 40), st.floats(0, 0.999, allow_nan=False))
def test_bc_is_ls_with_negative_alpha(L, a):
    assume(1 / (1 - a) < 1e6)
    assert np.allclose(bc_matrix(transition_matrix('uniform', L, a)), ls_matrix(L, bc_equivalent_alpha(a)), atol=1e-7 / (1 - a))

@given(st.integers(1, 40), rates)
def test_ls_target_is_expected_noisy_label(L, a):
    y = np.arange(L)
    T = transition_matrix('uniform', L, a)
    assert np.allclose(smoothed_targets(y, L, a), np.eye(L)[y] @ T, atol=1e-12)

# ---------------------------------------------------------------- losses

def batch(seed, N, L, scale, dtype=torch.float64, device='cpu'):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(N, L, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    y = torch.randint(0, L, (N,), generator=g).to(device)
    return x, y

shapes = st.tuples(st.integers(0, 2**16), st.integers(1, 40), st.integers(1, 40), st.sampled_from([0.1, 1.0, 10.0, 100.0]))

@given(shapes, alphas)
def test_ls_ce_matches_numpy_oracle(shape, alpha):
    seed, N, L, scale = shape
    x, y = batch(seed, N, L, scale)
    ours = ls_ce(x, y, alpha, reduction='none').numpy()
    ref = np_smeared_ce(x.numpy(), y.numpy(), ls_matrix(L, alpha))
    assert np.allclose(ours, ref, rtol=1e-9, atol=1e-9 * scale * (1 + abs(alpha)))

@given(shapes, st.floats(0, 1, allow_nan=False), st.sampled_from(['mean', 'sum', 'none']))
def test_ls_ce_matches_pytorch_on_0_1(shape, alpha, reduction):
    seed, N, L, scale = shape
    x, y = batch(seed, N, L, scale)
    ours, theirs = ls_ce(x, y, alpha, reduction), F.cross_entropy(x, y, label_smoothing=alpha, reduction=reduction)
    assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-9 * scale)

@given(shapes, st.floats(0, 0.95, allow_nan=False))
def test_backward_ce_uniform_is_negative_ls(shape, a):
    seed, N, L, scale = shape
    x, y = batch(seed, N, L, scale)
    T = transition_matrix('uniform', L, a)
    assert torch.allclose(backward_ce(x, y, T, 'none'), ls_ce(x, y, bc_equivalent_alpha(a), 'none'), rtol=1e-8, atol=1e-8 * scale)
    ref = np_smeared_ce(x.numpy(), y.numpy(), np.linalg.inv(T))
    assert np.allclose(backward_ce(x, y, T, 'none').numpy(), ref, rtol=1e-7, atol=1e-7 * scale / (1 - a))

@given(shapes, st.integers(0, 10**6))
def test_backward_and_smeared_ce_general_T(shape, tseed):
    seed, N, L, scale = shape
    x, y = batch(seed, N, L, scale)
    T = random_T(np.random.default_rng(tseed), L, 0.6)
    ref = np_smeared_ce(x.numpy(), y.numpy(), np.linalg.inv(T))
    assert np.allclose(backward_ce(x, y, T, 'none').numpy(), ref, rtol=1e-7, atol=1e-7 * scale * L)
    assert np.allclose(smeared_ce(x, y, np.linalg.inv(T), 'none').numpy(), ref, rtol=1e-7, atol=1e-7 * scale * L)

@given(shapes, st.sampled_from(['uniform', 'flip', 'pairflip', 'random']), rates)
def test_forward_ce_matches_numpy_oracle(shape, kind, rho):
    seed, N, L, scale = shape
    assume(scale <= 10)   # the probability-space oracle underflows beyond
    x, y = batch(seed, N, L, scale)
    if L == 1 and kind != 'uniform': kind = 'uniform'
    T = random_T(np.random.default_rng(seed), L, 1 - rho) if kind == 'random' else transition_matrix(kind, L, rho)
    ref = np_forward_ce(x.numpy(), y.numpy(), T)
    ours = forward_ce(x, y, T, 'none').numpy()
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(ours))
    assert np.allclose(ours[finite], ref[finite], rtol=1e-7, atol=1e-7)

def holes_T(seed, L, rho):
    "A dense T (more than L/4 non-zeros per column) with zeros in it: exercises the dense path's log-space fallback."
    rng = np.random.default_rng(seed)
    T = random_T(rng, L, 1 - rho) * (rng.random((L, L)) > 0.3)
    np.fill_diagonal(T, 1 - rho)
    return T / T.sum(1, keepdims=True)

@given(st.integers(0, 10**6), st.integers(2, 30), st.sampled_from(['uniform', 'flip', 'pairflip', 'random', 'holes']), st.floats(0.01, 0.99))
def test_forward_ce_finite_and_bounded_for_huge_logits(seed, L, kind, rho):
    "Logits of magnitude 1e4: FC is finite; where every class can reach y, it is bounded above by -log(min_i T[i, y])."
    x, y = batch(seed, 64, L, 1.0)
    x = torch.sign(x) * 1e4 * (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) > 0.5)
    T = {'random': lambda: random_T(np.random.default_rng(seed), L, 1 - rho), 'holes': lambda: holes_T(seed, L, rho)}.get(
        kind, lambda: transition_matrix(kind, L, rho))()
    for dtype in (torch.float32, torch.float64):
        xx = x.to(dtype).requires_grad_()
        loss = forward_ce(xx, y, T, 'none')
        assert torch.isfinite(loss).all()
        loss.sum().backward()
        assert torch.isfinite(xx.grad).all()
        exact = forward_ce(xx.detach().double(), y, T, 'none')   # float64 log-space value of the same loss
        assert torch.allclose(loss.double(), exact, rtol=1e-5, atol=1e-3)
        bound = torch.tensor([-np.log(T[:, t].min()) if (T[:, t] > 0).all() else np.inf for t in y.tolist()], dtype=torch.float64)
        assert (loss.double() <= bound + 1e-4).all()

@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize('name', ['smeared', 'ls', 'ls_neg', 'bc', 'bc_dense', 'fc', 'fc_pair', 'fc_dense'])
def test_losses_any_dtype_and_device(name, dtype, device):
    L = 12
    x, y = batch(0, 50, L, 3.0, dtype=dtype, device=device)
    x.requires_grad_()
    T_dense = random_T(np.random.default_rng(0), L, 0.7)
    fns = {'smeared': lambda: smeared_ce(x, y, np.linalg.inv(T_dense)), 'ls': lambda: ls_ce(x, y, 0.2),
           'ls_neg': lambda: ls_ce(x, y, -0.5), 'bc': lambda: backward_ce(x, y, transition_matrix('uniform', L, 0.3)),
           'bc_dense': lambda: backward_ce(x, y, T_dense), 'fc': lambda: forward_ce(x, y, transition_matrix('uniform', L, 0.3)),
           'fc_pair': lambda: forward_ce(x, y, transition_matrix('pairflip', L, 0.3)), 'fc_dense': lambda: forward_ce(x, y, T_dense)}
    loss = fns[name]()
    assert loss.dtype == dtype and loss.device.type == device and loss.shape == ()
    loss.backward()
    loss = loss.detach()
    assert x.grad is not None and x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    # same value as the float64 computation, to the dtype's precision
    x64 = x.detach().double().cpu().requires_grad_()
    y64 = y.cpu()
    with torch.no_grad():
        ref = {'smeared': lambda: smeared_ce(x64, y64, np.linalg.inv(T_dense)), 'ls': lambda: ls_ce(x64, y64, 0.2),
               'ls_neg': lambda: ls_ce(x64, y64, -0.5), 'bc': lambda: backward_ce(x64, y64, transition_matrix('uniform', L, 0.3)),
               'bc_dense': lambda: backward_ce(x64, y64, T_dense), 'fc': lambda: forward_ce(x64, y64, transition_matrix('uniform', L, 0.3)),
               'fc_pair': lambda: forward_ce(x64, y64, transition_matrix('pairflip', L, 0.3)), 'fc_dense': lambda: forward_ce(x64, y64, T_dense)}[name]()
    tol = {torch.float16: 2e-2, torch.bfloat16: 8e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    assert abs(loss.item() - ref.item()) <= tol * max(1.0, abs(ref.item()))

@pytest.mark.parametrize('name', ['smeared', 'ls', 'ls_neg', 'bc', 'bc_sym', 'fc', 'fc_pair', 'fc_dense'])
def test_gradcheck_float64(name):
    L = 8
    x, y = batch(5, 7, L, 2.0)
    x.requires_grad_()
    T = random_T(np.random.default_rng(5), L, 0.5)
    M = np.random.default_rng(6).normal(size=(L, L))
    fn = {'smeared': lambda z: smeared_ce(z, y, M, 'none'), 'ls': lambda z: ls_ce(z, y, 0.3, 'none'),
          'ls_neg': lambda z: ls_ce(z, y, -2.0, 'none'), 'bc': lambda z: backward_ce(z, y, T, 'none'),
          'bc_sym': lambda z: backward_ce(z, y, transition_matrix('flip', L, 0.4), 'none'),
          'fc': lambda z: forward_ce(z, y, transition_matrix('uniform', L, 0.4), 'none'),
          'fc_pair': lambda z: forward_ce(z, y, transition_matrix('pairflip', L, 0.4), 'none'),
          'fc_dense': lambda z: forward_ce(z, y, T, 'none')}[name]
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradcheck(lambda z: fn(z).sum(), (x,))

def test_reductions_agree():
    x, y = batch(1, 30, 6, 2.0)
    T = transition_matrix('pairflip', 6, 0.2)
    for f in (lambda r: ls_ce(x, y, 0.3, r), lambda r: backward_ce(x, y, T, r), lambda r: forward_ce(x, y, T, r)):
        none = f('none')
        assert none.shape == (30,)
        assert torch.allclose(f('mean'), none.mean()) and torch.allclose(f('sum'), none.sum())

def test_bc_unbounded_below_fc_bounded_above():
    "BC with softmax-CE goes to -inf as the true logit grows; FC saturates at -log(rho/L) when the prediction is wrong."
    L, a = 10, 0.2
    T = transition_matrix('uniform', L, a)
    y = torch.tensor([0])
    bc = [float(backward_ce(torch.tensor([[m] + [0.0] * (L - 1)]).double(), y, T)) for m in (1, 10, 100, 1000)]
    assert all(b2 < b1 for b1, b2 in zip(bc, bc[1:])) and bc[-1] < -20
    fc = [float(forward_ce(torch.tensor([[-m] + [0.0] * (L - 1)]).double(), y, T)) for m in (1, 10, 100, 1000)]
    assert all(f2 >= f1 for f1, f2 in zip(fc, fc[1:])) and fc[-1] <= -math.log(a / L) + 1e-9
    assert math.isclose(fc[-1], -math.log(a / L), rel_tol=1e-9)

@pytest.mark.parametrize('call,msg', [
    (lambda x, y: ls_ce(x, y, 1.01), 'alpha must be in [-inf, 1], got 1.01'),
    (lambda x, y: ls_ce(x, y, float('inf')), 'alpha must be a finite number'),
    (lambda x, y: ls_ce(x, y, float('nan')), 'alpha must be a finite number'),
    (lambda x, y: ls_ce(x, y[:-1], 0.1), 'target must have shape (N,) = (20,)'),
    (lambda x, y: ls_ce(x, y + 5, 0.1), 'target must hold class indices in [0, 5)'),
    (lambda x, y: ls_ce(x, y - 5, 0.1), 'target must hold class indices in [0, 5)'),
    (lambda x, y: ls_ce(x, y.float(), 0.1), 'target must be a torch tensor of integer class indices'),
    (lambda x, y: ls_ce(x.long(), y, 0.1), 'logits must be a floating-point torch tensor'),
    (lambda x, y: ls_ce(x.numpy(), y, 0.1), 'logits must be a floating-point torch tensor'),
    (lambda x, y: ls_ce(x[None], y, 0.1), 'logits must have shape (N, L)'),
    (lambda x, y: ls_ce(x, y, 0.1, reduction='batchmean'), 'reduction must be one of'),
    (lambda x, y: backward_ce(x, y, np.eye(4)), 'T must be 5 x 5'),
    (lambda x, y: backward_ce(x, y, np.ones((5, 5)) / 5), 'condition number'),
    (lambda x, y: backward_ce(x, y, transition_matrix('flip', 5, 0.8)), 'condition number'),
    (lambda x, y: backward_ce(x, y, np.ones((5, 4)) / 4), 'square'),
    (lambda x, y: forward_ce(x, y, -np.eye(5)), 'non-negative'),
    (lambda x, y: forward_ce(x, y, np.full((5, 5), 0.3)), 'row-stochastic'),
    (lambda x, y: forward_ce(x, y, np.full((5, 5), np.nan)), 'finite'),
    (lambda x, y: smeared_ce(x, y, np.eye(6)), 'M must be 5 x 5'),
    (lambda x, y: smeared_ce(x, y, np.full((5, 5), np.inf)), 'M must contain only finite entries'),
])
def test_loss_bad_input(call, msg):
    x, y = batch(0, 20, 5, 1.0, dtype=torch.float32)
    with pytest.raises(ValueError) as e: call(x, y)
    assert msg in str(e.value), str(e.value)
