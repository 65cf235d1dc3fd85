"""The battery of bad inputs and unsafe requests: every case ends in one line (exit 2 for bad input, 1 for a run or data
that failed), refuses to touch files the project did not write, or recovers; none ends in a traceback.

Most cases run `lsnoise.cli.main` in this process (tiny trainings on digits, one epoch); the signal and broken-pipe
cases need a process of their own."""
import json, os, pickle, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import yaml
from lsnoise.cli import capture_main
from lsnoise.store import write_record

BIN = Path(sys.executable).parent
LSNOISE = str(BIN / 'lsnoise')
ENV = {**os.environ, 'CI': 'true'}
TINY = ['--epochs', '1', '--device', 'cpu', '--no-progress']

run = capture_main      # (exit status, stdout, stderr) of `lsnoise argv` in this process; an exception escaping main fails the test

def one_line(err, *parts):
    "The error is one line (argparse: its usage line and one error line) holding every part, with no traceback."
    lines = [l for l in err.strip().splitlines() if not l.startswith(('usage:', ' '))]
    assert len(lines) == 1 and 'Traceback' not in err, err
    for p in parts: assert p in lines[0], (p, lines[0])
    return lines[0]

def grid_file(path, root, **spec):
    spec.setdefault('template', str(root / 'nbs' / 'experiments' / 'train_noisy.ipynb'))
    path.write_text(yaml.safe_dump(spec))
    return path

# 1. nothing outside the project's own outputs is deleted or overwritten without being asked

def test_train_refuses_a_folder_of_somebody_elses_files(tmp_path):
    d = tmp_path / 'thesis'; d.mkdir(); (d / 'thesis.tex').write_text('chapter 1'); (d / 'sub').mkdir()
    rc, out, err = run('train', *TINY, '--out', d)
    assert rc == 2; one_line(err, str(d), 'did not write (sub, thesis.tex)', '--force')
    assert sorted(p.name for p in d.iterdir()) == ['sub', 'thesis.tex']
    rc, out, err = run('train', *TINY, '--out', d, '--force')            # asked: written beside them, nothing removed
    assert rc == 0 and (d / 'thesis.tex').read_text() == 'chapter 1' and (d / 'run.json').exists()

@pytest.mark.parametrize('name,text,why', [('run.json', '{"run_id": "0123abcd4567", "status": "done"}', 'the record of another run (0123abcd4567)'),
                                           ('run.json', '{"results": [1, 2]}', 'not a record of lsnoise'),
                                           ('metrics.json', '{"accuracy": 0.9}', 'a metrics.json that lsnoise did not write')])
def test_train_refuses_somebody_elses_record(tmp_path, name, text, why):
    (tmp_path / name).write_text(text)
    rc, out, err = run('train', *TINY, '--out', tmp_path)
    assert rc == 2; one_line(err, why)
    assert (tmp_path / name).read_text() == text

def test_a_rerun_is_reused_and_another_config_is_refused(tmp_path):
    rc, out, err = run('train', *TINY, '--out', tmp_path)
    assert rc == 0 and '(reused' not in out
    before = (tmp_path / 'metrics.json').read_bytes()
    rc, out, err = run('train', *TINY, '--out', tmp_path)
    assert rc == 0 and 'reused: the folder already held this run' in out
    rc, out, err = run('train', *TINY, '--seed', '1', '--out', tmp_path)   # your own earlier run, another config
    assert rc == 2; one_line(err, 'holds the record of another run')
    assert (tmp_path / 'metrics.json').read_bytes() == before

def test_distill_refuses_a_teacher_folder_it_did_not_write(tmp_path):
    t = tmp_path / 'student' / 'teacher'; t.mkdir(parents=True); (t / 'run.json').write_text('{"run_id": "someone"}')
    rc, out, err = run('distill', *TINY, '--out', tmp_path / 'student')
    assert rc == 2; one_line(err, str(t), 'the record of another run (someone)')
    assert (t / 'run.json').read_text() == '{"run_id": "someone"}' and not (tmp_path / 'student' / 'run.json').exists()

def test_noise_export_never_replaces_a_file_unasked(tmp_path):
    f = tmp_path / 'n.npy'
    assert run('noise', 'export', '--dataset', 'digits', '--noise', 'uniform', '--rho', '0.4', '--out', f)[0] == 0
    sidecar = (tmp_path / 'n.npy.json').read_text()
    rc, out, err = run('noise', 'export', '--dataset', 'digits', '--noise', 'uniform', '--rho', '0.2', '--out', f)
    assert rc == 2; one_line(err, 'n.npy exists: refused', '--force')
    rc, out, err = run('noise', 'export', '--dataset', 'digits', '--noise', f'file:{f}', '--out', f, '--force')   # the input itself
    assert rc == 2; one_line(err, 'is the noise file the labels are read from')
    assert (tmp_path / 'n.npy.json').read_text() == sidecar
    assert run('noise', 'export', '--dataset', 'digits', '--noise', 'uniform', '--rho', '0.2', '--out', f, '--force')[0] == 0

def test_docs_refuses_a_folder_it_did_not_build(root, tmp_path):
    (tmp_path / 'thesis.tex').write_text('x'); (tmp_path / 'sub').mkdir()
    for out in (tmp_path, root):
        rc, _, err = run('docs', '--root', root, '--only', 'noise', '--mathjax', 'cdn', '--out', out)
        assert rc == 1 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['sub', 'thesis.tex'] and (root / 'settings.ini').exists()

def test_collect_with_no_runs_keeps_the_table(root, tmp_path):
    results = tmp_path / 'results'; results.mkdir()
    table = (root / 'results' / 'cpu-default.csv').read_bytes()
    (results / 'cpu-default.csv').write_bytes(table)
    held = pd.read_csv(results / 'cpu-default.csv', usecols=['run_id']).run_id.nunique()
    rc, out, err = run('collect', root / 'experiments' / 'cpu-default.yaml', '--runs-dir', tmp_path / 'runs', '--results-dir', results)
    assert rc == 2 and (results / 'cpu-default.csv').read_bytes() == table
    one_line(err, f'holds {held} runs, and 0 are finished', '--force')
    rc, out, err = run('collect', root / 'experiments' / 'cpu-default.yaml', '--runs-dir', tmp_path / 'runs', '--results-dir', tmp_path / 'fresh')
    assert rc == 1 and 'nothing collected, nothing written' in out and not (tmp_path / 'fresh').exists()

# 2. loading never runs code

class _Evil:
    def __init__(self, path): self.path = path
    def __reduce__(self): return (os.system, (f'touch {self.path}',))

def test_a_planted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    import torch
    marker = tmp_path / 'pwned'
    for save in (lambda f: f.write_bytes(pickle.dumps({'state': _Evil(marker)})), lambda f: torch.save({'state': _Evil(marker)}, f)):
        d = tmp_path / f'run{save.__hash__()}'; d.mkdir(); save(d / 'checkpoint.pt')
        rc, out, err = run('train', *TINY, '--out', d)
        assert rc == 2; one_line(err, 'checkpoint.pt: not a checkpoint that lsnoise wrote, refused without running anything')
        assert not marker.exists()

# 3. a run's id covers its data

def test_a_changed_noise_file_is_a_new_run(tmp_path):
    f = tmp_path / 'n.npy'
    run('noise', 'export', '--dataset', 'digits', '--noise', 'uniform', '--rho', '0.4', '--out', f)
    assert run('train', *TINY, '--noise', f'file:{f}', '--out', tmp_path / 'a')[0] == 0
    first = json.loads((tmp_path / 'a' / 'run.json').read_text())
    run('noise', 'export', '--dataset', 'digits', '--noise', 'uniform', '--rho', '0.2', '--out', f, '--force')   # re-exported in place
    rc, out, err = run('train', *TINY, '--noise', f'file:{f}', '--out', tmp_path / 'a')
    assert rc == 2; one_line(err, 'holds the record of another run')       # not silently "done"
    assert run('train', *TINY, '--noise', f'file:{f}', '--out', tmp_path / 'a', '--force')[0] == 0
    second = json.loads((tmp_path / 'a' / 'run.json').read_text())
    assert second['run_id'] != first['run_id'] and second['noise']['labels_sha256'] != first['noise']['labels_sha256']

def test_a_record_in_the_wrong_folder_is_corrupt_and_not_collected(root, tmp_path):
    from lsnoise.sweep import load_grid, run_key, grid_status
    g = load_grid(grid_file(tmp_path / 'g.yaml', root, name='g', base={'epochs': 1, 'device': 'cpu'}, grid={'seed': [0, 1]}))
    a, b = (run_key(g, p) for p in g.runs)
    rc, out, err = run('train', *TINY, '--out', tmp_path / 'runs' / 'g' / a)
    import shutil; shutil.copytree(tmp_path / 'runs' / 'g' / a, tmp_path / 'runs' / 'g' / b)    # another run's record in b's folder
    st = grid_status(g, tmp_path / 'runs')
    assert st['done'] == [a] and st['corrupt'] == [b]
    rc, out, err = run('collect', g.path, '--runs-dir', tmp_path / 'runs', '--results-dir', tmp_path / 'results')
    assert rc == 0 and f'corrupt {b}: run.json holds run {a!r}, not {b}' in out
    assert pd.read_csv(tmp_path / 'results' / 'g.csv').run_id.unique().tolist() == [a]

# 4. a sweep stops; a GPU grid is refused on a CPU; progress; the collect summary

def _descendants(pid):
    from lsnoise.sweep import _children
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop()); out += kids; todo += kids
    return out

def _alive(pid):
    try: state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError: return False
    return state != 'Z'

@pytest.mark.parametrize('sig,status', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_sweep_within_seconds(root, tmp_path, sig, status):
    grid = grid_file(tmp_path / 'slow.yaml', root, name='slow', base={'epochs': 300, 'device': 'cpu'}, grid={'seed': [0, 1, 2]},
                     cases=[{'method': ['ce'], 'alpha': [0.0]}, {'method': ['bc'], 'alpha': [0.3]}])
    runs = tmp_path / 'runs'
    p = subprocess.Popen([LSNOISE, 'sweep', str(grid), '--workers', '2', '--runs-dir', str(runs)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 180
    while time.time() < deadline and p.poll() is None and len(list(runs.rglob('*.progress.json'))) < 2: time.sleep(0.1)
    assert p.poll() is None, p.communicate()
    time.sleep(2)                                                          # a checkpoint or two
    procs = _descendants(p.pid)
    assert len(procs) >= 4, procs                                          # two workers, each with its kernel
    t0 = time.time(); p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    took = time.time() - t0
    assert p.returncode == status and took < 10, (p.returncode, took, out, err)
    one_line(err, f'interrupted by {signal.Signals(sig).name}', 'resumes them from their last checkpoint')
    time.sleep(1)
    assert not [q for q in procs if _alive(q)], 'a worker or kernel outlived the sweep'
    assert not list((runs / 'slow' / '.claims').glob('*.claim'))         # no sweeper waits for the killed workers
    assert not list(runs.rglob('run.json'))                                # nothing recorded as failed (nor finished, in 2 s)
    assert list(runs.rglob('*.pt'))                                        # the checkpoints the next sweep resumes from
    rc, out, err = run('status', grid, '--runs-dir', runs)
    assert 'slow: 6 runs: done 0, failed 0, pending 6, corrupt 0' in out, out + err

def test_a_gpu_grid_is_refused_on_a_machine_without_one(root, tmp_path):
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    rc, out, err = run('sweep', root / 'experiments' / 'paper-cifar10.yaml', '--runs-dir', tmp_path / 'runs')
    assert rc == 2; one_line(err, 'device cuda: its 160 runs (160 units) ask for a CUDA device, and this machine has none')
    assert not (tmp_path / 'runs').exists()

def test_a_unit_reports_progress_from_inside(tmp_path, monkeypatch):
    from lsnoise.config import TrainConfig
    from lsnoise.sweep import unit_progress
    from lsnoise.train import train
    import lsnoise.engine as engine
    seen = []
    f = tmp_path / 'abc123.progress.json'
    monkeypatch.setenv(engine.PROGRESS_FILE_ENV, str(f)); monkeypatch.setattr(engine, 'PROGRESS_NOTE_S', 0.0)
    real = engine.os.replace
    monkeypatch.setattr(engine.os, 'replace', lambda a, b: (real(a, b), seen.append(unit_progress([tmp_path]))))
    train(TrainConfig(epochs=3, device='cpu'), progress=False)
    assert seen and all(len(s) == 1 for s in seen)
    assert 'unit abc123: ce: epoch 3.0/3, 1/1 runs alive' in seen[-1][0] and 'ETA of this stage' in seen[-1][0]

def test_collect_ends_with_a_summary_line(root, tmp_path):
    g = grid_file(tmp_path / 'g.yaml', root, name='g', base={'epochs': 1, 'device': 'cpu'}, grid={'seed': [0]})
    from lsnoise.sweep import load_grid, run_key
    rid = run_key(load_grid(g), load_grid(g).runs[0])
    run('train', *TINY, '--out', tmp_path / 'runs' / 'g' / rid)
    rc, out, err = run('collect', g, '--runs-dir', tmp_path / 'runs', '--results-dir', tmp_path / 'results')
    assert rc == 0 and out.strip().splitlines()[-1].startswith('g: 1 of 1 runs collected into') and 'collapsed 0, diverged 0; failed 0, pending 0, corrupt 0' in out

# 5. every bad input gets one line

def _noise_files(d):
    (d / 'empty.npy').write_bytes(b''); (d / 'empty.npy.json').write_text('{}')
    np.savez(d / 'arch.npz', y=np.zeros(3)); (d / 'arch.npz.json').write_text('{}')
    (d / 'folder.npy').mkdir(); (d / 'folder.npy.json').write_text('{}')
    np.save(d / 'list.npy', np.zeros(1297, dtype=np.int64)); (d / 'list.npy.json').write_text('[1, 2, 3]')
    return [('empty.npy', 'not a plain .npy array'), ('arch.npz', 'an .npz archive'), ('folder.npy', 'is a folder'),
            ('list.npy', 'must be a JSON object'), ('missing.npy', 'does not exist')]

def test_bad_noise_files(tmp_path):
    for name, why in _noise_files(tmp_path):
        rc, out, err = run('train', *TINY, '--noise', f'file:{tmp_path / name}')
        assert rc == 2, (name, out, err); one_line(err, name, why)

def test_a_damaged_mnist1d_cache_names_the_file_to_delete(tmp_path):
    (tmp_path / 'mnist1d.npz').write_bytes(b'PK\x03\x04 cut short')
    rc, out, err = run('train', *TINY, '--dataset', 'mnist1d', '--data-root', tmp_path)
    assert rc == 1; one_line(err, str(tmp_path / 'mnist1d.npz'), 'delete this file')

@pytest.mark.parametrize('argv,status,parts', [
    (['train', '--val-fraction', '0.0001'], 2, ['val_fraction 0.0001 holds out 0 of the 1297 digits training examples', 'val_fraction must be in [0.0074, 0.9996]']),
    (['train', '--val-fraction', '0.9999'], 2, ['val_fraction 0.9999']),
    (['train', '--t-source', 'estimated', '--method', 'ls', '--alpha', '0.2'], 2, ['T_source applies to methods fc and bc only']),
    (['train', '--method', 'nls'], 2, ["method must be one of ce, ls, fc, bc; got 'nls'"]),
    (['train', '--rho', '1.5'], 2, ['rho must be in [0, 1]']),
    (['train', '--device', 'tpu'], 2, ['device must be auto, cpu, cuda, cuda:N or mps']),
    (['sweep', 'experiments/smoke.yaml', '--workers', '0'], 2, ["workers must be an integer at least 1, got '0'"]),
    (['reproduce', '--workers', '-1'], 2, ["workers must be an integer at least 1"]),
    (['docs', '--workers', 'x'], 2, ["workers must be an integer at least 1"]),
])
def test_bad_arguments(root, argv, status, parts):
    argv = [str(root / a) if a.endswith('.yaml') else a for a in argv]
    rc, out, err = run(argv[0], *(TINY if argv[0] == 'train' else []), *argv[1:])     # the case's own flags win
    assert rc == status, (rc, out, err); one_line(err, *parts)

def test_paths_that_are_files(root, tmp_path):
    f = tmp_path / 'file.txt'; f.write_text('x')
    smoke = root / 'experiments' / 'smoke.yaml'
    for argv, part in ((['train', *TINY, '--out', f], 'is a file, not a folder'),
                       (['sweep', smoke, '--runs-dir', f], f'runs_dir {f}'),
                       (['status', smoke, '--runs-dir', f], f'runs_dir {f}'),
                       (['collect', smoke, '--runs-dir', f], f'runs_dir {f}'),
                       (['collect', smoke, '--runs-dir', tmp_path / 'none', '--results-dir', f], f'results_dir {f}'),
                       (['noise', 'export', '--dataset', 'digits', '--noise', 'uniform', '--out', tmp_path], 'out must end in .npy'),
                       (['reproduce', '--root', tmp_path], 'not a checkout of lsnoise'),
                       (['reproduce', '--root', f], 'not a checkout of lsnoise')):
        rc, out, err = run(*argv)
        assert rc == 2, (argv, out, err); one_line(err, part)
    assert f.read_text() == 'x'

def test_bad_grid_files(root, tmp_path):
    tpl = root / 'nbs' / 'experiments' / 'train_noisy.ipynb'
    (tmp_path / 'dup.yaml').write_text(f"template: {tpl}\nbase: {{seed: 1, rho: 0.2, seed: 2}}\ngrid: {{alpha: [0.0]}}\n")
    (tmp_path / 'nb.txt').write_text('not a notebook'); (tmp_path / 'tpl').mkdir()
    (tmp_path / 'a.yaml').write_text(f"template: {tmp_path / 'nb.txt'}\ngrid: {{rho: [0.2]}}\n")
    (tmp_path / 'b.yaml').write_text(f"template: {tmp_path / 'tpl'}\ngrid: {{rho: [0.2]}}\n")
    for grid, part in (('dup.yaml', "key 'seed' is given twice (line 2)"), ('a.yaml', 'not a Jupyter notebook'),
                       ('b.yaml', 'not a notebook file (a folder)'), ('missing.yaml', 'grid file not found')):
        for cmd in ('sweep', 'status', 'collect'):
            rc, out, err = run(cmd, tmp_path / grid, '--runs-dir', tmp_path / 'runs')
            assert rc == 2, (grid, cmd, out, err); one_line(err, part)
    assert not (tmp_path / 'runs').exists()

def test_a_template_refuses_an_unknown_parameter(root, tmp_path):
    from lsnoise.nbexec import execute_notebook
    for name in ('train_noisy', 'distill_noisy'):
        with pytest.raises(Exception) as e:
            execute_notebook(root / 'nbs' / 'experiments' / f'{name}.ipynb', tmp_path / f'{name}.ipynb', root / 'nbs' / 'experiments',
                             parameters={'rhoo': 0.4, 'epochs': 1, 'device': 'cpu', 'out_dir': str(tmp_path / name)})
        assert 'ParameterError: unknown parameter(s) rhoo' in str(e.value) and 'did you mean rho?' in str(e.value)
        assert not (tmp_path / name).exists()                                 # refused before anything trained

def test_status_into_a_closed_pipe_is_quiet(root):
    r, w = os.pipe(); os.close(r)
    p = subprocess.run([LSNOISE, 'status', str(root / 'experiments' / 'paper-cifar10.yaml'), '--runs-dir', '/nonexistent-runs'],
                       stdout=w, stderr=subprocess.PIPE, text=True, env=ENV)
    os.close(w)
    assert 'Traceback' not in p.stderr and 'BrokenPipeError' not in p.stderr and p.returncode == 141, p.stderr
