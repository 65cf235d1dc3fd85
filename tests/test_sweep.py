"The experiment layer: templates through papermill, grid validation, the local and Ray backends, kill -9 and rerun, collect."
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path
import pandas as pd
import pytest
from lsnoise.nbexec import execute_notebook
from lsnoise.results import COLUMNS
from lsnoise.config import TrainConfig, DistillConfig, schema
from lsnoise.sweep import template_parameters, RESERVED
from lsnoise.store import read_journal

BIN = Path(sys.executable).parent
LSNOISE = str(BIN / 'lsnoise')
ENV = {**os.environ, 'CI': 'true', 'RAY_USAGE_STATS_ENABLED': '0'}

def cli(*args, cwd=None, timeout=900):
    return subprocess.run([LSNOISE, *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd)

def in_process(*args):
    "`lsnoise ARGS` run in this process (the same code as the command, without starting one), as a CompletedProcess."
    from lsnoise.cli import capture_main
    return subprocess.CompletedProcess(args, *capture_main(*args))

def write_grid(path, root, **spec):
    spec.setdefault('template', str(root / 'nbs' / 'experiments' / 'train_noisy.ipynb'))
    import yaml
    path.write_text(yaml.safe_dump(spec))
    return path

def test_templates_run_through_papermill(root, tmp_path):
    exp = root / 'nbs' / 'experiments'
    execute_notebook(exp / 'train_noisy.ipynb', tmp_path / 't.ipynb', cwd=exp,
                     parameters={'rho': 0.4, 'method': 'fc', 'alpha': 0.3, 'epochs': 2, 'device': 'cpu', 'out_dir': str(tmp_path / 'train')})
    run = json.loads((tmp_path / 'train' / 'run.json').read_text())
    assert run['status'] == 'done' and run['config']['method'] == 'fc' and run['config']['epochs'] == 2
    execute_notebook(exp / 'distill_noisy.ipynb', tmp_path / 'd.ipynb', cwd=exp,
                     parameters={'rho': 0.4, 'teacher_alpha': 0.5, 'tau': 2.0, 'epochs': 2, 'device': 'cpu', 'out_dir': str(tmp_path / 'student')})
    student = json.loads((tmp_path / 'student' / 'run.json').read_text())
    teacher = json.loads((tmp_path / 'student' / 'teacher' / 'run.json').read_text())
    assert student['teacher']['run_id'] == teacher['run_id'] and teacher['students'] == [student['run_id']]
    nb = json.loads((tmp_path / 'd.ipynb').read_text())
    assert any('injected-parameters' in c['metadata'].get('tags', []) for c in nb['cells'])   # papermill found the tag

def test_templates_keep_their_parameters_tag(root):
    for nb in (root / 'nbs' / 'experiments').glob('*.ipynb'):
        cells = json.loads(nb.read_text())['cells']
        tagged = [c for c in cells if 'parameters' in c['metadata'].get('tags', [])]
        assert len(tagged) == 1 and tagged[0] is [c for c in cells if c['cell_type'] == 'code'][0], f"{nb.name}: the first code cell must be the one tagged 'parameters'"

def test_help_notebook_lists_parameters(root):
    r = subprocess.run([str(BIN / 'papermill'), '--help-notebook', str(root / 'nbs' / 'experiments' / 'train_noisy.ipynb')],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and 'rho: float (default 0.0)' in r.stdout and 'runs_json' in r.stdout

@pytest.mark.parametrize('name,cls', [('train_noisy', TrainConfig), ('distill_noisy', DistillConfig)])
def test_template_parameters_match_the_schema(root, name, cls):
    "The template's parameters cell declares every config field with the schema's type, default and help, and nothing else."
    params = template_parameters(root / 'nbs' / 'experiments' / f'{name}.ipynb')
    for p in schema(cls):
        assert p.name in params, f"{name}: no parameter {p.name}"
        default, typ, help_ = params[p.name]
        want = f'Optional[{p.type.__name__}]' if p.nullable else p.type.__name__
        assert (default, typ) == (p.default, want), f"{name}.{p.name}: template says {typ} = {default!r}, the schema {want} = {p.default!r}"
        assert help_.startswith(p.help), f"{name}.{p.name}: help {help_!r} is not the schema's {p.help!r}"
    extra = set(params) - {p.name for p in schema(cls)}
    assert extra <= set(RESERVED) | {'out_dir', 'teacher_dir'}, f"{name}: parameters outside the schema: {extra}"

SMOKE = 'experiments/smoke.yaml'     # 12 runs of 3 epochs in two units

@pytest.fixture(scope='module')
def smoke(root, tmp_path_factory):
    "The smoke grid swept once by the command with two workers: (the grid, its runs folder, the sweep's output), read, copied or compared with below."
    runs = tmp_path_factory.mktemp('smoke') / 'runs'
    r = cli('sweep', str(root / SMOKE), '--workers', '2', '--runs-dir', str(runs))
    assert r.returncode == 0, r.stdout + r.stderr
    return str(root / SMOKE), runs, r.stdout

def test_smoke_sweep_then_collect(smoke, tmp_path):
    grid, runs, out = smoke
    assert 'done 12, failed 0, pending 0' in out and 'ETA' in out
    r = in_process('status', grid, '--runs-dir', runs)
    assert 'done 12, failed 0, pending 0' in r.stdout
    r = in_process('collect', grid, '--runs-dir', runs, '--results-dir', tmp_path / 'results')
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / 'results' / 'smoke.csv')
    for c in ('run_id', 'grid', 'dataset', 'model', 'noise', 'rho', 'method', 'alpha', 'tau', 'teacher_alpha', 'seed', 'epoch', 'split', 'metric', 'value'):
        assert c in df.columns
    assert df.run_id.nunique() == 12 and set(df.epoch.astype(str)) >= {'final', 'best', '1', '3'}
    meta = json.loads((tmp_path / 'results' / 'smoke.meta.json').read_text())
    assert meta['counts'] == {'done': 12, 'failed': 0, 'pending': 0, 'corrupt': 0} and meta['grid']['name'] == 'smoke'
    assert meta['environment']['torch'] and meta['date']
    again = in_process('sweep', grid, '--runs-dir', runs)
    assert 'to run: 0 runs' in again.stdout                                          # finished work is not redone
    for d in (runs / 'smoke').iterdir():                              # each kept notebook shows its own run
        if not (d / 'run.json').exists(): continue
        mine = [c for c in json.loads((d / 'notebook.ipynb').read_text())['cells'] if 'this-run' in c['metadata'].get('tags', [])]
        params = json.loads((d / 'run.json').read_text())['config']
        assert len(mine) == 1 and f"**This run: `{d.name}`**" in ''.join(mine[0]['source'])
        assert f"| `rho` | `{params['rho']!r}` |" in ''.join(mine[0]['source']), d.name

def _snapshot(runs):
    "run id -> metrics.json bytes, and the set of files in every run folder."
    out = {}
    for d in sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(('_', '.'))):
        out[d.name] = ((d / 'metrics.json').read_bytes(), sorted(f.name for f in d.iterdir()))
    return out

def test_kill_minus_9_then_rerun_finishes_exactly_once(smoke, tmp_path):
    """A sweeper killed with -9 while both its workers train leaves its claims and no record; the next sweeper takes
    the claims over and finishes the grid, and every record is byte for byte the uninterrupted sweep's: each run done
    once, fully, with nothing half-written and no checkpoint left."""
    grid, whole, _ = smoke
    runs, claims = tmp_path / 'runs' / 'smoke', tmp_path / 'runs' / 'smoke' / '.claims'
    p = subprocess.Popen([LSNOISE, 'sweep', grid, '--workers', '2', '--runs-dir', str(tmp_path / 'runs')],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None and not list(runs.rglob('*.progress.json')): time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    time.sleep(1)                                                      # workers and kernels die with the runner
    assert list(claims.glob('*.claim')), "the sweeper finished before it could be killed"
    assert len(list(runs.glob('*/run.json'))) < 12
    r = in_process('sweep', grid, '--workers', '2', '--runs-dir', tmp_path / 'runs')
    assert r.returncode == 0 and 'done 12, failed 0, pending 0' in r.stdout, r.stdout + r.stderr
    assert not list(claims.glob('*.claim'))
    killed = _snapshot(runs)
    assert len(killed) == 12 and all(files == ['metrics.json', 'notebook.ipynb', 'run.json'] for _, files in killed.values())
    assert not [p for p in runs.rglob('*') if p.name.endswith('.tmp') or p.suffix == '.pt']   # nothing half-written, no checkpoints
    assert {k: v[0] for k, v in killed.items()} == {k: v[0] for k, v in _snapshot(whole / 'smoke').items()}

def test_a_failing_run_is_recorded_and_retried(root, tmp_path):
    blocker = tmp_path / 'data'
    blocker.write_text('a file where the data directory should be')
    grid = write_grid(tmp_path / 'failing.yaml', root, name='failing', base={'epochs': 2, 'device': 'cpu', 'method': 'ce', 'alpha': 0.0},
                      grid={'dataset': ['digits', 'mnist1d'], 'seed': [0]}, cases=[{'data_root': [str(blocker)]}])
    r = in_process('sweep', grid, '--runs-dir', tmp_path / 'runs')
    assert r.returncode == 1 and 'done 1, failed 1, pending 0' in r.stdout
    failed = [json.loads(p.read_text()) for p in (tmp_path / 'runs' / 'failing').glob('*/run.json') if json.loads(p.read_text())['status'] == 'failed']
    assert len(failed) == 1 and failed[0]['error'] and failed[0]['traceback']
    nb = (tmp_path / 'runs' / 'failing' / failed[0]['run_id'] / 'notebook.ipynb')
    assert nb.exists()
    r = in_process('sweep', grid, '--runs-dir', tmp_path / 'runs')
    assert 'to run: 0 runs' in r.stdout                                  # not retried unless asked
    blocker.unlink(); blocker.mkdir()
    r = in_process('sweep', grid, '--retry-failed', '--runs-dir', tmp_path / 'runs')
    assert r.returncode == 0 and 'done 2, failed 0, pending 0' in r.stdout, r.stdout + r.stderr

@pytest.mark.parametrize('spec,msg', [
    ({'grid': {'rho': [0.1]}, 'colour': 'red'}, "unknown key 'colour'"),
    ({'grid': {'learning_rate': [0.1]}}, "grid.learning_rate: the template train_noisy.ipynb declares no parameter 'learning_rate'"),
    ({'grid': {'rho': []}}, "grid.rho: must be a non-empty list"),
    ({'grid': {'rho': ['high']}}, "grid.rho: rho must be float, got 'high' (str)"),
    ({'base': {'epochs': 2.5}, 'grid': {'rho': [0.1]}}, "base.epochs: epochs must be int or null (the recipe's), got 2.5 (float)"),
    ({'base': {'epochs': 0}, 'grid': {'rho': [0.1]}}, "epochs must be an integer in [1, inf], got 0"),
    ({'name': '../../etc', 'grid': {'rho': [0.1]}}, "name: name must be a plain file name (letters, digits, '-', '_', '.'; not starting with a dot), got '../../etc'"),
    ({'name': '.hidden', 'grid': {'rho': [0.1]}}, "name: name must be a plain file name"),
    ({'grid': {'method': ['nls']}}, "method must be one of ce, ls, fc, bc; got 'nls'"),
    ({'template': 'nowhere.ipynb', 'grid': {'rho': [0.1]}}, "template: file not found: nowhere.ipynb"),
    ({'grid': {'rho': [0.1]}, 'cases': [{'method': ['ce'], 'alpha': [0.5]}]}, "alpha must be 0 for method='ce'"),
    ({'grid': {'out_dir': ['x']}}, "grid.out_dir: set by the runner"),
])
def test_bad_grid_is_one_line_before_anything_runs(root, tmp_path, spec, msg):
    grid = write_grid(tmp_path / 'bad.yaml', root, **spec)
    for extra in ((), ('--dry-run',)):
        r = in_process('sweep', str(grid), '--runs-dir', str(tmp_path / 'runs'), *extra)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(grid) in lines[0] and msg in lines[0], r.stderr
        assert not (tmp_path / 'runs').exists() and not (tmp_path / 'etc').exists()

def test_empty_grid(root, tmp_path):
    grid = tmp_path / 'empty.yaml'
    grid.write_text(f"template: {root / 'nbs' / 'experiments' / 'train_noisy.ipynb'}\ncases: []\n")
    r = in_process('sweep', str(grid), '--runs-dir', str(tmp_path / 'runs'))
    assert r.returncode == 2 and 'the grid is empty' in r.stderr
    grid.write_text(f"template: {root / 'nbs' / 'experiments' / 'train_noisy.ipynb'}\nbase: {{rho: 0.1}}\n")
    r = in_process('sweep', str(grid), '--runs-dir', str(tmp_path / 'runs'))
    assert r.returncode == 2 and 'grid: missing: the grid is empty' in r.stderr
    assert not (tmp_path / 'runs').exists()

def test_a_cuda_grid_plans_and_reports_on_any_machine(root, tmp_path):
    "resolve() is pure: a grid that says device: cuda is planned, counted and dry-run on a machine without CUDA."
    grid = str(root / 'experiments' / 'paper-cifar10.yaml')
    r = in_process('status', grid, '--runs-dir', str(tmp_path / 'runs'))
    assert r.returncode == 0 and 'paper-cifar10: 160 runs: done 0, failed 0, pending 160' in r.stdout, r.stdout + r.stderr
    r = in_process('sweep', grid, '--dry-run', '--runs-dir', str(tmp_path / 'runs'))
    assert r.returncode == 0 and 'to run: 160 runs in 160 units' in r.stdout, r.stdout + r.stderr

def test_a_corrupt_record_is_reported_and_trained_again(smoke, tmp_path):
    "A metrics.json truncated by hand: status says corrupt, the next sweep trains that run again (and only that one)."
    grid, whole, _ = smoke
    shutil.copytree(whole, tmp_path / 'runs')
    runs = tmp_path / 'runs' / 'smoke'
    victim = sorted(p for p in runs.iterdir() if (p / 'run.json').exists())[0]
    good = (victim / 'metrics.json').read_bytes()
    (victim / 'metrics.json').write_bytes(good[:len(good) // 2])
    r = in_process('status', grid, '--runs-dir', tmp_path / 'runs')
    assert 'done 11, failed 0, pending 0, corrupt 1' in r.stdout and f'corrupt: {victim.name}: metrics.json is not valid JSON' in r.stdout
    assert 'the next sweep trains it again' in r.stdout
    r = in_process('sweep', grid, '--runs-dir', tmp_path / 'runs')
    assert r.returncode == 0 and 'done 12, failed 0, pending 0' in r.stdout, r.stdout + r.stderr
    assert (victim / 'metrics.json').read_bytes() == good                       # trained again, to the same record
    started = [rid for e in read_journal(runs) if e['event'] == 'start' for rid in e['runs']]
    assert started.count(victim.name) == 2 and len(started) == 12 + 6            # first sweep, then only its unit

def test_two_sweepers_share_one_grid(root, tmp_path):
    "Two sweepers started together on the smoke grid split its units: every run is trained exactly once."
    smoke = str(root / SMOKE)
    procs = [subprocess.Popen([LSNOISE, 'sweep', smoke, '--runs-dir', str(tmp_path / 'runs')], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs): assert p.returncode == 0, out + err
    events = read_journal(tmp_path / 'runs' / 'smoke')
    trained = [rid for e in events if e['event'] == 'start' for rid in e['runs']]
    assert len(trained) == 12 and len(set(trained)) == 12, f"trainings {len(trained)}, distinct runs {len(set(trained))}"
    assert sorted(e['unit'] for e in events if e['event'] == 'start') == sorted(e['unit'] for e in events if e['event'] == 'finish')
    r = in_process('status', smoke, '--runs-dir', tmp_path / 'runs')
    assert 'done 12, failed 0, pending 0, corrupt 0' in r.stdout
    assert not list((tmp_path / 'runs' / 'smoke' / '.claims').glob('*.claim'))   # every claim released

def _free_ports(n:int) -> list:
    "n distinct free ports: every socket is held open until all are chosen (one at a time, the system may hand out one port twice)."
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks: s.bind(('127.0.0.1', 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks: s.close()

def _ours(marker:str) -> list:
    "Processes whose command line mentions `marker` (this test's own Ray temporary folder)."
    import psutil
    out = []
    for p in psutil.process_iter(['pid', 'cmdline']):
        try:
            if marker in ' '.join(p.info['cmdline'] or []): out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied): pass
    return out

def test_ray_backend_matches_local(smoke, tmp_path):
    """The Ray backend gives the local backend's records. The test starts its own one-node cluster (its own temporary
    folder and ports, in its own process group) and stops exactly the processes it started."""
    ray = BIN / 'ray'
    if not ray.exists(): pytest.skip('ray is not installed (pip install -e ".[dev]" installs it)')
    tmp = Path(tempfile.mkdtemp(prefix='lsr-', dir='/tmp'))      # short: Ray's socket paths must fit in 107 characters
    port, *others = _free_ports(16)
    names = ('node-manager-port', 'object-manager-port', 'dashboard-agent-grpc-port',
             'dashboard-agent-listen-port', 'metrics-export-port', 'runtime-env-agent-port')
    args = [str(ray), 'start', '--head', '--block', f'--temp-dir={tmp}', f'--port={port}', '--include-dashboard=false',
            '--node-ip-address=127.0.0.1', '--num-cpus=2', '--disable-usage-stats',
            *[f'--{n}={p}' for n, p in zip(names, others)], '--worker-port-list=' + ','.join(map(str, others[len(names):]))]
    head = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(tmp_path / 'ray-head.log', 'w'), env=ENV, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if head.poll() is not None: pytest.fail(f"ray start exited: {(tmp_path / 'ray-head.log').read_text()[-2000:]}")
            if subprocess.run([str(ray), 'status', f'--address=127.0.0.1:{port}'], capture_output=True, env=ENV, timeout=60).returncode == 0: break
            time.sleep(1)
        r = cli('sweep', smoke[0], '--backend', 'ray', '--address', f'127.0.0.1:{port}',
                '--runs-dir', str(tmp_path / 'ray-runs'))
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        try: os.killpg(head.pid, signal.SIGTERM)
        except ProcessLookupError: pass
        try: head.wait(timeout=30)
        except subprocess.TimeoutExpired: os.killpg(head.pid, signal.SIGKILL); head.wait()
        for _ in range(30):                                        # Ray's own children that left the process group
            rest = _ours(str(tmp))
            if not rest: break
            for p in rest: p.terminate()
            time.sleep(0.5)
        for p in _ours(str(tmp)): p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    tables = []
    for which, runs in (('ray', tmp_path / 'ray-runs'), ('local', smoke[1])):     # the local sweep: the shared one, two workers
        in_process('collect', smoke[0], '--runs-dir', runs, '--results-dir', tmp_path / which)
        tables.append(pd.read_csv(tmp_path / which / 'smoke.csv').sort_values(['run_id', 'epoch', 'split', 'metric']).reset_index(drop=True))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert tables[0].run_id.nunique() == 12

def test_several_grids_in_one_pool(root, tmp_path):
    "sweep_grids runs the units of several grids (train and distill) through one pool, most expensive first, then finds nothing to do."
    from lsnoise.sweep import sweep_grids, load_grid, grid_status
    a = write_grid(tmp_path / 'a.yaml', root, name='pool-a', base={'epochs': 2, 'device': 'cpu'},
                   grid={'rho': [0.2, 0.4]}, cases=[{'method': ['ce'], 'alpha': [0.0]}, {'method': ['ls'], 'alpha': [-0.4], 'warmup_epochs': [1]}])
    b = write_grid(tmp_path / 'b.yaml', root, name='pool-b', template=str(root / 'nbs' / 'experiments' / 'distill_noisy.ipynb'),
                   base={'epochs': 2, 'device': 'cpu', 'rho': 0.4, 'teacher_method': 'fc'}, grid={'teacher_alpha': [0.2], 'tau': [1.0, 2.0]})
    out = sweep_grids([a, b], workers=2, runs_dir=tmp_path / 'runs', echo=False)
    assert {k: (len(v['done']), len(v['pending']), len(v['failed'])) for k, v in out.items()} == {'pool-a': (4, 0, 0), 'pool-b': (2, 0, 0)}
    rec = json.loads(next(p for p in (tmp_path / 'runs' / 'pool-a').glob('*/run.json') if json.loads(p.read_text())['config']['warmup_epochs']).read_text())
    assert rec['config']['alpha'] == -0.4 and rec['status'] in ('done', 'collapsed')
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / 'runs').rglob('run.json')}
    again = sweep_grids([a, b], workers=2, runs_dir=tmp_path / 'runs', echo=False)
    assert again == out and {p: p.stat().st_mtime_ns for p in (tmp_path / 'runs').rglob('run.json')} == stamps   # nothing trained again
    assert grid_status(load_grid(b), tmp_path / 'runs')['done'] == out['pool-b']['done']
