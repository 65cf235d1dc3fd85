"""Run ids stay put. Every run id in a committed table of results/ is the id its grid file gives today, and it is still
that id after a field with a default is added to the schema (a copy of TrainConfig and DistillConfig with one more
field), so adding a parameter never renames a committed run."""
from dataclasses import make_dataclass
from pathlib import Path
import pandas as pd
import pytest
import lsnoise.config as C
from lsnoise.sweep import load_grid, run_key

def committed_tables(root:Path) -> list:
    "(grid, committed run ids) of every results table that a grid file of experiments/ made (replications included)."
    out = []
    for f in sorted((root / 'results').glob('*.csv')):
        rep = f.stem.endswith('-replication')
        grid = root / 'experiments' / f"{f.stem.removesuffix('-replication')}.yaml"
        if grid.exists(): out.append((load_grid(grid, replication=rep), set(pd.read_csv(f, usecols=['run_id'], dtype=str).run_id)))
    return out

@pytest.fixture(scope='module')
def tables(root):
    t = committed_tables(root)
    assert len(t) >= 20, f"expected the main, follow-up and replication tables, found {len(t)}"
    return t

def ids_now(tables) -> dict:
    return {g.name: {run_key(g, p) for p in g.runs} for g, _ in tables}

def test_committed_ids_are_what_the_grids_give(tables):
    now = ids_now(tables)
    bad = [g.name for g, ids in tables if now[g.name] != ids]
    assert not bad, f"the grid files give other run ids than the committed tables of {bad}"

def test_adding_a_field_renames_no_run(tables, monkeypatch):
    field = ('new_knob', float, C.param(0.5, 'a parameter added after these runs'))
    monkeypatch.setattr(C, 'TrainConfig', make_dataclass('TrainConfig', [field], bases=(C.TrainConfig,)))
    monkeypatch.setattr(C, 'DistillConfig', make_dataclass('DistillConfig', [field], bases=(C.DistillConfig,)))
    assert 'new_knob' in {f.name for f in C.fields(C.resolve({}))}      # the runs are planned with the larger schema
    now = ids_now(tables)
    moved = {g.name: len(ids - now[g.name]) for g, ids in tables if now[g.name] != ids}
    assert not moved, f"adding a field with its default renamed committed runs: {moved}"
    c = C.resolve({'method': 'ls', 'alpha': 0.1, 'rho': 0.2})
    assert C.run_id(c) != C.run_id(C.resolve({'method': 'ls', 'alpha': 0.1, 'rho': 0.2, 'new_knob': 0.7}))   # set: another run
