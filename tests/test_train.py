"Training end to end: the command line, identical records, kill-and-resume, CIFAR through torchvision on a tiny archive, missing data."
import hashlib, io, json, os, pickle, signal, subprocess, sys, tarfile, time
from pathlib import Path
import numpy as np
import pytest
import torch
import torchvision
from lsnoise.data import load_clean, make_noisy_data, DatasetNotFound
from lsnoise.config import TrainConfig, DistillConfig
from lsnoise.train import train, train_group

LSNOISE = str(Path(sys.executable).parent / 'lsnoise')
METRICS = ['test/acc', 'test/nll', 'test/ece', 'test/mean_max_prob', 'test/logit_norm', 'test/logit_gap', 'val/acc', 'val/nll',
           'train/loss', 'train/acc_noisy', 'train/acc_true_kept', 'train/acc_true_corrupted', 'train/memorised']

def cli(*args, **kw):
    return subprocess.run([LSNOISE, *args], capture_output=True, text=True, timeout=600, env={**os.environ, 'CI': 'true'}, **kw)

def in_process(*args):
    "(exit status, stderr) of `lsnoise ARGS` run in this process: the same code as the command, without starting one."
    from lsnoise.cli import capture_main
    rc, _, err = capture_main(*args)
    return rc, err

def test_cli_train_digits_writes_a_full_record(tmp_path):
    r = cli('train', '--dataset', 'digits', '--noise', 'uniform', '--rho', '0.4', '--method', 'ls', '--alpha', '0.4',
            '--seed', '0', '--device', 'cpu', '--out', str(tmp_path))
    assert r.returncode == 0, r.stderr
    run, m = json.loads((tmp_path / 'run.json').read_text()), json.loads((tmp_path / 'metrics.json').read_text())
    assert run['status'] == 'done' and run['config']['alpha'] == 0.4 and run['config']['epochs'] == 60
    assert 0.3 < run['noise']['realised_flip_rate'] < 0.42 and run['environment']['torch'] == torch.__version__
    for summary in ('final', 'best'):
        for k in METRICS: assert m[summary][k] is not None and np.isfinite(m[summary][k]), (summary, k)
    assert len(m['epochs']) == 60 and m['best_epoch'] == m['best']['epoch']
    assert m['best']['val/acc'] == max(e['val/acc'] for e in m['epochs'])
    assert len(m['test_reliability']['count']) == 15 and sum(m['test_reliability']['count']) == 500
    assert run['run_id'] in r.stdout
    assert run['device'] == 'cpu' and run['execution']['group_size'] == 1 and run['execution']['position'] == 0
    from lsnoise.core import environment
    assert run['environment'] == environment()          # this process's provenance (versions, kernel path, code tree), not a placeholder

def test_cli_bad_input_is_one_line(tmp_path):
    for args, msg in [(['--dataset', 'mnist'], 'dataset must be one of'), (['--method', 'ls', '--alpha', '1.5'], 'alpha must be in'),
                      (['--rho', '2'], 'rho must be in [0, 1]'), (['--tau-wrong', '1'], 'unrecognized arguments'),
                      (['--method', 'bc', '--alpha', '1.0'], 'alpha must be in [0, 1)'),
                      (['--epochs', '0'], 'epochs must be an integer in [1, inf], got 0'),
                      (['--batch-size', '0'], 'batch_size must be an integer in [1, inf], got 0'),
                      (['--epochs', '3', '--steps', '10'], 'set epochs or steps, not both'),
                      (['--method', 'nls'], "method must be one of ce, ls, fc, bc; got 'nls'"),
                      (['--device', 'gpu'], "device must be auto, cpu, cuda, cuda:N or mps; got 'gpu'")]:
        rc, err = in_process('train', *args, '--out', str(tmp_path / 'x'))
        assert rc == 2 and msg in err.strip().splitlines()[-1] and 'Traceback' not in err, (args, err)   # the last line says it (argparse prints its usage first)
    assert not (tmp_path / 'x').exists()                                  # nothing was written

def test_same_seed_identical_records(tmp_path):
    cfg = TrainConfig(rho=0.2, method='fc', alpha=0.2, epochs=8, device='cpu')
    train(cfg, tmp_path / 'a', progress=False); train(cfg, tmp_path / 'b', progress=False)
    assert (tmp_path / 'a' / 'metrics.json').read_bytes() == (tmp_path / 'b' / 'metrics.json').read_bytes()

def kill_after_first_checkpoint(p, ckpt, settle):
    "SIGKILL process p `settle` seconds after its first checkpoint appears (or when it ends, or after 120 s)."
    deadline = time.time() + 120
    while not ckpt.exists() and p.poll() is None and time.time() < deadline: time.sleep(0.02)
    time.sleep(settle)
    p.send_signal(signal.SIGKILL); p.wait()

def test_killed_run_resumes_to_the_same_record(tmp_path):
    "A run killed with -9 after a checkpoint, then started again (here in this process: the same code), ends with the record of an uninterrupted run."
    args = ['train', '--model', 'cnn', '--rho', '0.4', '--method', 'ls', '--alpha', '0.5', '--epochs', '20', '--seed', '3']
    p = subprocess.Popen([LSNOISE, *args, '--out', str(tmp_path / 'killed')], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, 'CI': 'true'})
    ckpt = tmp_path / 'killed' / 'checkpoint.pt'
    kill_after_first_checkpoint(p, ckpt, settle=0.5)
    assert not (tmp_path / 'killed' / 'run.json').exists(), "the run finished before it could be killed"
    saved = torch.load(ckpt, weights_only=False)['state']['epoch']
    assert 0 < saved < 20
    rc, err = in_process(*args, '--no-progress', '--out', str(tmp_path / 'killed'))
    assert rc == 0, err
    run = json.loads((tmp_path / 'killed' / 'run.json').read_text())
    assert run['resumed_from_epoch'] >= saved and run['status'] == 'done'
    assert not ckpt.exists() and not list((tmp_path / 'killed').glob('*.tmp'))
    rc, err = in_process(*args, '--no-progress', '--out', str(tmp_path / 'whole'))
    assert rc == 0, err
    assert (tmp_path / 'killed' / 'metrics.json').read_bytes() == (tmp_path / 'whole' / 'metrics.json').read_bytes()

# ------------------------------------------------------------------ CIFAR on a tiny archive in the real format

def _md5(p): return hashlib.md5(Path(p).read_bytes()).hexdigest()

def make_tiny_cifar(root:Path, name:str, n_per_batch:int=24, n_test:int=30, seed:int=0):
    "Write a tiny CIFAR archive (.tar.gz of pickled batches, exactly torchvision's format); return its md5 table."
    rng = np.random.default_rng(seed)
    L, label_key = (10, 'labels') if name == 'cifar10' else (100, 'fine_labels')
    folder = 'cifar-10-batches-py' if name == 'cifar10' else 'cifar-100-python'
    files = ([f'data_batch_{i}' for i in range(1, 6)], ['test_batch'], 'batches.meta') if name == 'cifar10' else (['train'], ['test'], 'meta')
    build = root / 'build' / folder
    build.mkdir(parents=True)
    def batch(n):
        y = rng.integers(0, L, n)
        x = (rng.integers(0, 64, (n, 3072)) + (y[:, None] * 19 % 192)).astype(np.uint8)   # class-dependent brightness
        d = {'data': x, label_key: y.tolist(), 'filenames': [f'{i}.png' for i in range(n)]}
        if name == 'cifar100': d['coarse_labels'] = (y // 5).tolist()
        return d
    for f in files[0]: pickle.dump(batch(n_per_batch * (5 if name == 'cifar100' else 1)), open(build / f, 'wb'))
    for f in files[1]: pickle.dump(batch(n_test), open(build / f, 'wb'))
    meta = {'label_names': [f'c{i}' for i in range(10)]} if name == 'cifar10' else {'fine_label_names': [f'c{i}' for i in range(100)], 'coarse_label_names': [f's{i}' for i in range(20)]}
    pickle.dump(meta, open(build / files[2], 'wb'))
    archive = root / ('cifar-10-python.tar.gz' if name == 'cifar10' else 'cifar-100-python.tar.gz')
    with tarfile.open(archive, 'w:gz') as tar: tar.add(build, arcname=folder)
    return {'tgz_md5': _md5(archive), 'train_list': [[f, _md5(build / f)] for f in files[0]],
            'test_list': [[f, _md5(build / f)] for f in files[1]], 'meta_md5': _md5(build / files[2])}

@pytest.fixture(params=['cifar10', 'cifar100'])
def tiny_cifar(request, tmp_path, monkeypatch):
    name = request.param
    root = tmp_path / 'data'
    md5 = make_tiny_cifar(root, name)
    cls = torchvision.datasets.CIFAR10 if name == 'cifar10' else torchvision.datasets.CIFAR100
    monkeypatch.setattr(cls, 'tgz_md5', md5['tgz_md5'])
    monkeypatch.setattr(cls, 'train_list', md5['train_list'])
    monkeypatch.setattr(cls, 'test_list', md5['test_list'])
    monkeypatch.setattr(cls, 'meta', {**cls.meta, 'md5': md5['meta_md5']})
    def no_network(*a, **k): raise AssertionError('the tiny archive is on disk: nothing may be downloaded')
    monkeypatch.setattr(torchvision.datasets.utils, 'urlopen', no_network, raising=False)
    return name, root

def test_cifar_loads_through_torchvision_and_trains(tiny_cifar):
    name, root = tiny_cifar
    clean = load_clean(name, root=root, download=True)        # extracts the archive with torchvision's own code
    assert clean.x_train.shape == (120, 3, 32, 32) and clean.x_train.dtype == np.uint8 and clean.image
    assert clean.num_classes == (10 if name == 'cifar10' else 100)
    vf = 0.1 if name == 'cifar10' else 0.85       # 120 examples: a validation example per class of CIFAR-100 takes most of them
    data = make_noisy_data(name, 'cifar10' if name == 'cifar10' else 'cifar100', 0.4, seed=0, val_fraction=vf, root=root)
    assert data.x_train.dtype == torch.uint8 and data.noise['realised_flip_rate'] > 0
    rec = train(TrainConfig(dataset=name, model='resnet20', noise='uniform', rho=0.2, method='fc', alpha=0.2, steps=6,
                            batch_size=16, val_fraction=vf, data_root=str(root), device='cpu'), progress=False)
    # 18 training examples and 6 steps: a CIFAR-100 model still predicts one class, which the health check calls collapsed
    assert rec['run']['status'] in (('done',) if name == 'cifar10' else ('done', 'collapsed')) and rec['run']['config']['recipe'] == 'paper-cifar'
    assert rec['run']['schedule']['steps'] == 6 and rec['metrics']['final']['step'] == 6
    assert np.isfinite(rec['metrics']['final']['test/nll'])

def test_missing_data_says_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFound) as e: load_clean('cifar10', root=tmp_path / 'empty', download=False)
    msg = str(e.value)
    assert str(tmp_path / 'empty') in msg and 'download=True' in msg and 'LSNOISE_DATA' in msg
    def offline(self, *a, **k): raise OSError('network is unreachable')
    monkeypatch.setattr(torchvision.datasets.CIFAR100, 'download', offline)
    with pytest.raises(DatasetNotFound) as e: load_clean('cifar100', root=tmp_path / 'empty', download=True)
    assert 'could not be downloaded' in str(e.value) and 'network is unreachable' in str(e.value)

def test_mnist1d_generated_offline_and_cached(tmp_path):
    state = np.random.get_state()[1].copy()
    d = load_clean('mnist1d', root=tmp_path)
    assert d.x_train.shape == (4000, 1, 40) and d.x_test.shape == (1000, 1, 40) and set(np.unique(d.y_train)) == set(range(10))
    assert (tmp_path / 'mnist1d.npz').exists()
    assert np.array_equal(np.random.get_state()[1], state)        # the generator's global reseeding is undone
    again = load_clean('mnist1d', root=tmp_path)                 # from the cache
    assert np.array_equal(again.x_train, d.x_train) and np.array_equal(again.y_test, d.y_test)

def test_killed_group_resumes_to_the_same_records(tmp_path):
    "A group of runs killed mid-training and restarted (in this process) ends with the records of an uninterrupted group."
    from lsnoise.bench import cpu_default_configs
    cfgs = cpu_default_configs(12, 20)
    code = ("import sys; from pathlib import Path; from lsnoise.bench import cpu_default_configs; from lsnoise.train import train_group; "
            "d = Path(sys.argv[1]); train_group(cpu_default_configs(12, 20), [d / str(i) for i in range(12)], progress=False, checkpoint=d / 'group.pt')")
    p = subprocess.Popen([sys.executable, '-c', code, str(tmp_path / 'killed')], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / 'killed' / 'group.pt'
    kill_after_first_checkpoint(p, ckpt, settle=0.3)
    assert not list((tmp_path / 'killed').glob('*/run.json')), "the group finished before it could be killed"
    assert 0 < torch.load(ckpt, weights_only=False)['state']['epoch'] < 20
    for d in (tmp_path / 'killed', tmp_path / 'whole'):
        train_group(cfgs, [d / str(i) for i in range(12)], progress=False, checkpoint=d / 'group.pt')
    assert not ckpt.exists()
    for i in range(12):
        a, b = (tmp_path / 'killed' / str(i) / 'metrics.json').read_bytes(), (tmp_path / 'whole' / str(i) / 'metrics.json').read_bytes()
        assert a == b, f"run {i} differs after resuming"
    assert json.loads((tmp_path / 'killed' / '0' / 'run.json').read_text())['resumed_from_epoch'] > 0

# ------------------------------------------------------------------ one engine: a group of K is K single runs

def test_mlp_group_equals_single_runs_over_the_full_cpu_recipe():
    """All four methods at every noise rate, 60 epochs, as one group of 16 and one by one. For the MLP a single run is a
    stacked model of one, and each run's slice of a batched matrix product is computed by the same kernel whatever K
    is: the records are identical, every metric of every epoch."""
    cfgs = [TrainConfig(rho=r, method=m, alpha=a, seed=1, device='cpu') for r in (0.0, 0.2, 0.4, 0.6)
            for m, a in (('ce', 0.0), ('ls', 0.4), ('fc', 0.4), ('bc', 0.3))]
    grouped = train_group(cfgs, progress=False)
    for c, g in zip(cfgs, grouped):
        s = train(c, progress=False)
        assert g['run']['run_id'] == s['run']['run_id'] and g['run']['status'] == s['run']['status']
        assert g['metrics'] == s['metrics'], f"{c.method} rho={c.rho}: group and single records differ"
        assert (g['run']['execution']['group_size'], s['run']['execution']['group_size']) == (16, 1)

# ------------------------------------------------------------------ kill -9 at the dangerous moment of a distillation

KILL_AFTER_TEACHER_WEIGHTS = """
import os, signal, sys
from pathlib import Path
import lsnoise.train as T
real = T.write_record
def write_record(out, record):
    if 'teachers' in Path(out).parts and (Path(out) / 'model.pt').exists(): os.kill(os.getpid(), signal.SIGKILL)
    real(out, record)
T.write_record = write_record   # the instant after a teacher's weights were written and before its record
"""
DISTIL = """
import sys
from pathlib import Path
from lsnoise.config import DistillConfig
from lsnoise.distill import distill_group
d = Path(sys.argv[1])
cfgs = [DistillConfig(rho=0.4, teacher_alpha=a, tau=t, epochs=4, device='cpu') for a in (0.0, 0.6) for t in (1.0, 2.0)]
distill_group(cfgs, [d / f's{i}' for i in range(4)], [d / 'teachers' / str(c.teacher_alpha) for c in cfgs], progress=False)
"""

def test_distillation_killed_between_teacher_weights_and_record(tmp_path):
    "kill -9 right after a teacher's model.pt and before its run.json: the rerun trains that teacher again and finishes."
    run = lambda code, d: subprocess.run([sys.executable, '-c', code, str(d)], capture_output=True, text=True, timeout=600)
    r = run(KILL_AFTER_TEACHER_WEIGHTS + DISTIL, tmp_path / 'killed')
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    teachers = tmp_path / 'killed' / 'teachers'
    assert [p.parent.name for p in teachers.glob('*/model.pt')] and not list(teachers.glob('*/run.json'))   # weights, no record
    r = run(DISTIL, tmp_path / 'killed'); assert r.returncode == 0, r.stderr[-3000:]
    r = run(DISTIL, tmp_path / 'whole'); assert r.returncode == 0, r.stderr[-3000:]
    for i in range(4):
        a, b = (tmp_path / 'killed' / f's{i}' / 'metrics.json').read_bytes(), (tmp_path / 'whole' / f's{i}' / 'metrics.json').read_bytes()
        assert a == b, f"student {i} differs after the rerun"
    for t in ('0.0', '0.6'):
        run_json = json.loads((teachers / t / 'run.json').read_text())
        assert run_json['status'] == 'done' and len(run_json['students']) == 2 and (teachers / t / 'model.pt').exists()

def _nudged(direction):
    "init_model with every initial weight moved by one float32 ulp (towards +inf, -inf, or alternating): a round-off-sized change."
    from lsnoise import engine
    def init(cfg, shape, L):
        m = engine.init_model(cfg, shape, L)
        with torch.no_grad():
            for i, p in enumerate(m.parameters()):
                d = direction if direction else (1 if i % 2 else -1)
                p.copy_(torch.nextafter(p, torch.full_like(p, d * float('inf'))))
        return m
    return init

def test_cnn_group_matches_single_runs_within_measured_round_off(monkeypatch):
    """The small CNN at the recipe of the committed MNIST-1D grids (width 8, 20 epochs of the cpu schedule): a group
    (grouped convolutions) and single runs (plain convolutions) use different kernels, so their float32 round-off
    differs from the first step on, and training amplifies it. The tolerance is measured, not chosen: three single runs
    whose initial weights were moved by one ulp show how far round-off alone carries each metric over the 20 epochs;
    the group must stay within twice that spread, at every epoch, for every run."""
    import lsnoise.train as T
    cfgs = [TrainConfig(dataset='mnist1d', model='cnn', width=8, epochs=20, rho=0.4, method=m, alpha=a, device='cpu') for m, a in (('ce', 0.0), ('ls', 0.4))]
    grouped = train_group(cfgs, progress=False)
    for c, g in zip(cfgs, grouped):
        single = train(c, progress=False)['metrics']['epochs']
        nudged = []
        for d in (1, -1, 0):
            monkeypatch.setattr(T, 'init_model', _nudged(d))
            nudged.append(train(c, progress=False)['metrics']['epochs'])
            monkeypatch.undo()
        assert len(g['metrics']['epochs']) == len(single) == 20
        for k in ('test/acc', 'val/acc', 'train/acc_noisy'):
            s = np.array([e[k] for e in single])
            spread = max(np.abs(np.array([e[k] for e in n]) - s).max() for n in nudged)
            dev = np.abs(np.array([e[k] for e in g['metrics']['epochs']]) - s)
            assert spread > 0, f"{c.method} {k}: a one-ulp change of the weights changed nothing: the measurement is void"
            assert dev.max() <= 2 * spread, (f"{c.method} {k}: group-vs-single deviation {dev.max():.4f} (epoch {dev.argmax() + 1}) "
                                             f"exceeds twice the round-off spread {spread:.4f}")
