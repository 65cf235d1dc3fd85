"Packed CIFAR ResNets: a group of K = 3 ResNet-20 runs trained as one network equals 3 single runs (same seeds)."
import pytest
import copy
import numpy as np
import torch
from lsnoise.engine import fit, init_model, GroupLoss, RunLoss
from lsnoise.config import TrainConfig, resolve
from lsnoise.gpucheck import synthetic_cifar

def _nudge(model, direction):
    "A copy of `model` with every parameter moved by one float32 ulp (towards +inf, or alternating): a round-off-sized change."
    m = copy.deepcopy(model)
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            d = direction if direction else (1 if i % 2 else -1)
            p.copy_(torch.nextafter(p, torch.full_like(p, d * float('inf'))))
    return m

def _distance(a, b):
    "Largest relative difference over every weight and batch-norm running statistic of two state dicts."
    return max(float((a[n].float() - b[n].float()).abs().max() / b[n].float().abs().max().clamp_min(1e-12)) for n in b if not n.endswith('num_batches_tracked'))

def test_packed_resnets_equal_single_runs_within_round_off():
    """K = 3 ResNet-20, 96 steps of 16 images on CIFAR-format data (uint8 3x32x32, crop and flip on the device), each run with its
    own labels and its own loss. The packed network (grouped convolutions, batch norm over K x C channels) and the
    single runs use different convolution kernels, so their float32 round-off differs from the first step, and
    training a batch-normalised ResNet amplifies any difference: the tolerance is measured, not chosen. Two single
    runs whose initial weights were moved by one ulp show how far round-off alone carries the weights, the batch-norm
    running statistics and the test accuracy after 96 steps; the packed run must stay within twice that spread."""
    data = synthetic_cifar(256, 128, 32, seed=3)
    K, L = 3, data.num_classes
    cfgs = [resolve(TrainConfig(dataset='cifar10', model='resnet20', epochs=6, batch_size=16, lr=0.02, eval_every=1000, device='cpu', seed=s)) for s in range(K)]
    ys = torch.stack([torch.roll(data.y_train, k) if k else data.y_train for k in range(K)])          # each run its own labels
    losses = [RunLoss(M=np.eye(L)), RunLoss(M=(1 - 0.3) * np.eye(L) + 0.3 / L), RunLoss(M=np.eye(L), clip=0.01)]   # and its own loss
    inits = [init_model(c, data.input_shape, L) for c in cfgs]
    yv = data.y_val[None]
    packed = fit(cfgs[0], data, [copy.deepcopy(m) for m in inits], ys, yv.expand(K, -1).contiguous(), GroupLoss(losses, L, 'cpu'), progress=False)
    assert packed['steps'] == 6 * 16 and type(packed['model']).__name__ == 'StackedResNet'
    single_fit = lambda m, k: fit(cfgs[0], data, [m], ys[k:k + 1], yv, GroupLoss([losses[k]], L, 'cpu'), progress=False)
    for k in range(K):
        single = single_fit(copy.deepcopy(inits[k]), k)
        nudged = [single_fit(_nudge(inits[k], d), k) for d in (1, 0)]
        s_state, p_state = single['model'].run(0).state_dict(), packed['model'].run(k).state_dict()
        assert sorted(p_state) == sorted(s_state) and int(p_state['stem.1.num_batches_tracked']) == 96     # batch norm counted every step
        spread = max(_distance(n['model'].run(0).state_dict(), s_state) for n in nudged)
        dev = _distance(p_state, s_state)
        assert spread > 0, "a one-ulp change of the weights changed nothing: the measurement is void"
        assert dev <= 2 * spread, f"run {k}: packed-vs-single difference {dev:.2e} exceeds twice the round-off spread {spread:.2e}"
        acc = lambda r: r['runs'][0]['final']['test/acc'] if len(r['runs']) == 1 else r['runs'][k]['final']['test/acc']
        acc_spread = max(abs(acc(n) - acc(single)) for n in nudged)
        assert abs(packed['runs'][k]['final']['test/acc'] - acc(single)) <= 2 * acc_spread + 1 / 128, (k, acc_spread)

def test_gpucheck_dry_mode_runs_without_the_dev_tools(root, tmp_path):
    "python -m lsnoise.gpucheck --dry runs every step on the CPU with papermill, nbdev, fastcore, scipy, sklearn and mnist1d unimportable."
    import subprocess, sys, json
    blocked = ['papermill', 'nbdev', 'fastcore', 'scipy', 'sklearn', 'mnist1d', 'ray', 'execnb']
    code = ("import sys\n" + ''.join(f"sys.modules[{m!r}] = None\n" for m in blocked) +
            "from lsnoise.gpucheck import main\nsys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, '-c', code, '--dry', '--out', str(tmp_path), '--root', str(root)], capture_output=True, text=True,
                       timeout=600, env={'PYTHONPATH': str(root), 'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert any('K=2' in l for l in lines) and any('plain DataLoader' in l for l in lines) and any('packed vs single' in l for l in lines)
    out = json.loads(next(tmp_path.glob('gpucheck-*.json')).read_text())
    assert out['dry'] and set(out['projection']['grids']) == {'paper-cifar10', 'paper-cifar100', 'paper-distill-cifar100'}

def test_gpucheck_without_cuda_says_so_and_exits_0(root):
    import subprocess, sys, torch
    if torch.cuda.is_available(): pytest.skip('this machine has CUDA: the GPU check measures instead')
    r = subprocess.run([sys.executable, '-m', 'lsnoise.gpucheck', '--out', ''], capture_output=True, text=True, timeout=120, cwd=root)
    assert r.returncode == 0 and r.stdout.strip().splitlines() == [r.stdout.strip()] and 'no CUDA device' in r.stdout
