"The README's main job: figures and the report are drawn from results/ only, and match the committed ones."
import json, shutil
import numpy as np
from matplotlib.image import imread
from lsnoise.cli import reproduce, REPRODUCE_NOTEBOOKS, render_readme

FIGURES = ('fig1_logistic_losses', 'fig_shrinkage_omega', 'fig_synthetic_boundaries', 'fig_accuracy_vs_alpha', 'fig_denoising',
           'fig_calibration', 'fig_shrinkage', 'fig_distillation', 'fig_penultimate')

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

def test_committed_results_are_complete(root):
    meta = json.loads((root / 'results' / 'cpu-default.meta.json').read_text())
    assert meta['counts'] == {'done': 216, 'failed': 0, 'pending': 0, 'corrupt': 0}
    assert meta['reproduction_wall_s'] > 0          # recorded (how long it may take is a benchmark's business, not a test's)
    dmeta = json.loads((root / 'results' / 'cpu-default-distill.meta.json').read_text())
    assert dmeta['counts']['done'] == 90 and dmeta['environment']['git_commit']
