"""Every notebook runs, once per session: the library notebooks (their examples and checks) and the templates, executed
as the docs execute them (nbdev's rule for which cells run, from the notebook's folder). The executed copies are the
docs build's own (`_build/executed/`, keyed by the sources), so the site built in the same session executes nothing
again, and whichever of the two comes first does the work. The narrative notebooks (figures, theory, the report) are
executed by tests/test_reproduce.py, which holds their committed outputs to a re-run byte for byte; here and in the
docs they are shown with those outputs."""
from lsnoise.cli import REPRODUCE_NOTEBOOKS
from lsnoise.docs import execute_notebooks, site_notebooks

def test_every_notebook_runs(root, capsys):
    nbs = site_notebooks(root / 'nbs')
    executed, fresh = execute_notebooks(root, nbs, root / '_build', committed=REPRODUCE_NOTEBOOKS, say=lambda m: None)
    assert sorted(executed) == sorted(p.relative_to(root / 'nbs').as_posix() for p in nbs)
    ran = [p.stem for p in nbs if p.stem not in REPRODUCE_NOTEBOOKS]
    assert len(ran) >= 25 and 'index' in ran and '07b_engine' in ran
    with capsys.disabled(): print(f"\n{len(nbs)} notebooks: {len(ran)} executed or cached ({fresh} processed now), {len(nbs) - len(ran)} with their committed outputs")
