"""Committed results are the code's results. The cheapest unit of each kind of main grid (plain, estimated T,
distillation, and the small CNN of MNIST-1D) is trained again and held against the committed table: every row
identical where torch and the kernel path are the ones recorded in the table's meta; elsewhere the first epochs within
the round-off growth measured here, by training the same unit again from initial weights moved by one float32 ulp.
A commit that changes the arithmetic without regenerating results/ fails here instead of landing stale tables."""
import json
import pytest
import torch
from lsnoise.core import numeric_differences
from lsnoise.results import load_results, compare_results
from lsnoise.sweep import load_grid, cheapest_unit, retrain_unit

KINDS = {'plain': 'cpu-default', 'estimated T': 'cpu-default-estimated', 'distillation': 'cpu-default-distill',
         'small CNN': 'cpu-mnist1d-estimated'}      # the CNN's grouped convolutions: the float32 path that differs most between machines
EARLY = 3          # epochs compared on another torch or CPU

def _nudged(monkeypatch):
    "Every initial weight moved by one float32 ulp towards +inf: a change of round-off size."
    import lsnoise.train as T, lsnoise.distill as D
    real = T.init_model
    def init(cfg, shape, L):
        m = real(cfg, shape, L)
        with torch.no_grad():
            for p in m.parameters(): p.copy_(torch.nextafter(p, torch.full_like(p, float('inf'))))
        return m
    monkeypatch.setattr(T, 'init_model', init); monkeypatch.setattr(D, 'init_model', init)

@pytest.fixture(scope='module')
def retrained(root, tmp_path_factory):
    "kind -> (grid, committed table, retrained rows, what differs from the recorded environment)."
    out = {}
    for kind, name in KINDS.items():
        g = load_grid(root / 'experiments' / f'{name}.yaml')
        d = tmp_path_factory.mktemp(name.replace('-', '_'))
        recorded = json.loads((root / 'results' / f'{name}.meta.json').read_text())['environment']
        out[kind] = (g, load_results(name, root / 'results'), retrain_unit(g, cheapest_unit(g, d), d), numeric_differences(recorded), d)
    return out

@pytest.mark.parametrize('kind', list(KINDS))
def test_committed_rows_are_what_the_code_gives(kind, retrained, monkeypatch, capsys):
    g, committed, new, differs, d = retrained[kind]
    assert new.run_id.nunique() == len(cheapest_unit(g, d).runs) and len(new) > 100
    if not differs:
        diff = compare_results(new, committed)
        with capsys.disabled(): print(f"\n{g.name} ({kind}): {new.run_id.nunique()} runs retrained; same torch and kernel path as recorded: every row compared exactly")
    else:
        _nudged(monkeypatch)
        nudged = retrain_unit(g, cheapest_unit(g, d / 'nudged'), d / 'nudged')
        growth = max((abs(a - b) for a, b in _early_values(new, nudged)), default=0.0)
        assert growth > 0, "a one-ulp change of the initial weights changed nothing: the round-off measurement is void"
        tol = 2 * growth
        diff = compare_results(new, committed, epochs=EARLY, tol=tol)
        with capsys.disabled(): print(f"\n{g.name} ({kind}): environment differs ({'; '.join(differs)}): epochs 1-{EARLY} compared within {tol:.4f} "
                                      f"(twice the growth of a one-ulp change of the weights, {growth:.4f})")
    assert not diff, f"{g.name}: {len(diff)} rows differ from results/{g.name}.csv (regenerate with make reproduce): " + '; '.join(diff[:5])

def _early_values(a, b):
    key = ['run_id', 'epoch', 'split', 'metric']
    keep = lambda d: d[d.epoch.str.isdigit() & (d.epoch.str.len() > 0)].assign(e=lambda t: t.epoch.astype(int)).query('e <= @EARLY').set_index(key).value
    x, y = keep(a), keep(b)
    both = x.index.intersection(y.index)
    return zip(x[both].to_numpy(), y[both].to_numpy())

def test_a_perturbed_committed_row_is_caught(retrained):
    "The check can fail: one committed value moved (by 0.001, a tenth of one digits test example; by 0.5 where only early epochs compare) is reported."
    g, committed, new, differs, d = retrained['plain']
    rid, (epoch, step) = new.run_id.iloc[0], (('1', 0.5) if differs else ('final', 0.001))
    bad = committed.copy()
    i = bad.index[(bad.run_id == rid) & (bad.epoch == epoch) & (bad.split == 'test') & (bad.metric == 'acc')][0]
    bad.loc[i, 'value'] += step
    diff = compare_results(new, bad, epochs=EARLY, tol=0.1) if differs else compare_results(new, bad)
    assert any(line.startswith(f"{rid}/{epoch}/test/acc: ") for line in diff), diff[:3]
