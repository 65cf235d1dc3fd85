"The report computes its CIFAR rows from a GPU grid's table as soon as one exists: verdicts, and missing spreads shown as missing."
import shutil
import numpy as np
import pandas as pd
from lsnoise.nbexec import execute_notebook
from lsnoise.results import COLUMNS
from lsnoise.evidence import pm

def fake_cifar100(path):
    "A paper-cifar100 table in the real schema: LS and FC above CE on every seed; LS ResNet-32 lacks seed 4; BC ResNet-32 has one seed."
    rows, base = [], {'ce': 0.57, 'ls': 0.60, 'fc': 0.61, 'bc': 0.54}
    for model in ('resnet32', 'resnet56'):
        for m, acc in base.items():
            seeds = range(5)
            if (model, m) == ('resnet32', 'ls'): seeds = range(4)                 # one seed missing
            if (model, m) == ('resnet32', 'bc'): seeds = range(1)                 # a single seed: no spread
            for s in seeds:
                ident = dict(run_id=f'{model}-{m}-{s}', grid='paper-cifar100', dataset='cifar100', model=model, noise='uniform', rho=0.2,
                             method=m, alpha=0.0 if m == 'ce' else 0.1, tau=np.nan, teacher_alpha=np.nan, teacher_method='', seed=s)
                v = acc + 0.002 * s + (0.001 if m == 'ls' and s % 2 else 0)
                for epoch in ('final', 'best'):
                    rows += [{**ident, 'epoch': epoch, 'split': 'test', 'metric': 'acc', 'value': v},
                             {**ident, 'epoch': epoch, 'split': 'val', 'metric': 'acc', 'value': v - 0.1}]
                rows += [{**ident, 'epoch': 'final', 'split': 'meta', 'metric': k, 'value': 0.0} for k in ('diverged', 'collapsed')]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)

def test_cifar_rows_computed_from_a_gpu_table(root, tmp_path):
    res = tmp_path / 'results'
    shutil.copytree(root / 'results', res)
    fake_cifar100(res / 'paper-cifar100.csv')
    execute_notebook(root / 'nbs' / '30_reproduction.ipynb', tmp_path / 'report.ipynb', cwd=root / 'nbs', parameters={'results_dir': str(res)})
    matrix, legend, once = (res / 'headline.md').read_text().split('\n\n')     # the claim x data set matrix, its legend, the claims checked once
    assert matrix.splitlines()[0] == ('| # | claim | comparisons | digits, MLP, final epoch | digits, MLP, early stopping | '
                                      'MNIST-1D, small CNN, final epoch | MNIST-1D, small CNN, early stopping |')
    assert legend.startswith('✓ holds')
    cells = [line.split(' | ') for line in once.splitlines()[2:]]
    head = {' '.join(c[:3]).strip('| '): c[-1].rstrip(' |') for c in cells}
    for protocol in ('final', 'best'):
        assert head[f'7 cifar100 {protocol}'] == 'partly: holds: LS > CE, FC > CE; not measured: BC < CE', head[f'7 cifar100 {protocol}']
        assert head[f'8 cifar10 {protocol}'].startswith('not measured: lsnoise sweep experiments/paper-cifar10.yaml')
        assert head[f'10 CIFAR {protocol}'] == ('partly: holds: cifar100 resnet32, cifar100 resnet56; not measured: cifar10 resnet32, cifar10 resnet56'), head[f'10 CIFAR {protocol}']
    report = (res / 'reproduction.md').read_text()
    assert '54.0 ± n/a (n = 1)' in report                                     # a missing spread is shown as missing
    ls32 = pd.Series([0.60 + 0.002 * s + (0.001 if s % 2 else 0) for s in range(4)])
    assert pm(ls32) in report and '(n = 4)' in pm(ls32)                       # the missing seed is not invented
    assert '± 0.0 (n = 1)' not in report
