"The README's main job: figures and the report are drawn from results/ only, and match the committed ones."
import json, shutil
import numpy as np
from matplotlib.image import imread
from lsnoise.cli import reproduce, REPRODUCE_NOTEBOOKS, render_readme

FIGURES = ('fig1_logistic_losses', 'fig_shrinkage_omega', 'fig_synthetic_boundaries', 'fig_accuracy_vs_alpha', 'fig_denoising',
           'fig_calibration', 'fig_shrinkage', 'fig_distillation', 'fig_penultimate', 'fig_negative_alpha', 'fig_forest')

def test_main_job_redraws_everything_from_results(root, tmp_path):
    for d in ('nbs', 'results', 'experiments'): shutil.copytree(root / d, tmp_path / d)
    (tmp_path / 'figures').mkdir()
    shutil.copy(root / 'README.md', tmp_path / 'README.md')
    done = reproduce(tmp_path, sweeps=False)
    assert [p.stem for p in done] == list(REPRODUCE_NOTEBOOKS)
    for p in done:
        codes = [c for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'code']
        assert all(c.get('execution_count') for c in codes), f"{p.name}: not every cell ran"
        assert not any(o.get('output_type') == 'error' for c in codes for o in c.get('outputs', []))
    for fig in FIGURES:
        for ext in ('png', 'pdf'): assert (tmp_path / 'figures' / f'{fig}.{ext}').stat().st_size > 10_000
        new, old = imread(tmp_path / 'figures' / f'{fig}.png'), imread(root / 'figures' / f'{fig}.png')
        assert new.shape == old.shape and np.abs(new - old).mean() < 0.01, f"{fig}.png differs from the committed figure"
    # the report's headline table is what the README shows
    head = (tmp_path / 'results' / 'headline.md').read_text().strip()
    assert head in (tmp_path / 'README.md').read_text() and head in (root / 'README.md').read_text()
    assert (tmp_path / 'README.md').read_text() == render_readme(tmp_path / 'nbs' / 'index.ipynb')
    assert (tmp_path / 'results' / 'reproduction.md').read_text() == (root / 'results' / 'reproduction.md').read_text()
    # the narrative notebooks are committed with their outputs, and a re-run leaves them byte-identical
    strip = lambda outs: [{k: v for k, v in o.items() if k != 'execution_count'} for o in outs]
    for n, p in zip(REPRODUCE_NOTEBOOKS, done):
        kept = [strip(c['outputs']) for c in json.loads((tmp_path / 'nbs' / f'{n}.ipynb').read_text())['cells'] if c['cell_type'] == 'code']
        ran = [strip(c['outputs']) for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'code']
        assert kept == ran, f"{n}: written back without the outputs of its run"
        assert (tmp_path / 'nbs' / f'{n}.ipynb').read_bytes() == (root / 'nbs' / f'{n}.ipynb').read_bytes(), f"{n}.ipynb: its outputs changed on a re-run"

GRIDS = {'cpu-default': 360, 'cpu-default-distill': 150, 'cpu-default-estimated': 20, 'cpu-mnist1d': 240, 'cpu-mnist1d-distill': 120,
         'cpu-mnist1d-estimated': 20, 'cpu-followup': 150, 'cpu-followup-distill': 45, 'cpu-mnist1d-followup': 150, 'cpu-mnist1d-followup-distill': 45}

def test_committed_results_are_complete(root):
    "Every grid of the main job and the follow-up, and their replications, committed whole (5 seeds each) from a clean tree."
    meta = json.loads((root / 'results' / 'cpu-default.meta.json').read_text())
    wall = meta['reproduction_wall_s']              # recorded by the run that made the tables, and what the README says it took
    readme = ' '.join((root / 'README.md').read_text(encoding='utf-8').split())
    assert f"in about {round(wall / 60)} minutes on 2 CPU cores ({wall:,.0f} s from empty run folders" in readme, "the README's time is not the recorded one"
    for grid, n in [*GRIDS.items(), *((f'{g}-replication', n) for g, n in GRIDS.items()), ('mnist1d-recipe', 18)]:
        m = json.loads((root / 'results' / f'{grid}.meta.json').read_text())
        assert m['counts'] == {'done': n, 'failed': 0, 'pending': 0, 'corrupt': 0}, (grid, m['counts'])
        if grid != 'mnist1d-recipe':
            assert m['environment']['code_dirty'] is False and m['environment']['code_tree'], (grid, 'not made from a clean tree')
            assert {'cpu', 'cpu_capability', 'torch_blas'} <= set(m['environment']['kernel_path']), grid
