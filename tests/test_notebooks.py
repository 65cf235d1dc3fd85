"""Every notebook runs, once per session: the library notebooks (their examples and checks) and the templates, executed
as the docs execute them (nbdev's rule for which cells run, from the notebook's folder). The executed copies are the
docs build's own (`_build/executed/`, keyed by the sources), so the site built in the same session executes nothing
again, and whichever of the two comes first does the work. The narrative notebooks (figures, theory, the report) are
executed by tests/test_reproduce.py, which holds their committed outputs to a re-run byte for byte; here and in the
docs they are shown with those outputs. The library notebooks are committed with their examples' outputs, which are
held here to the executed copies: exactly in the recorded environment, elsewhere every shown output present."""
from lsnoise.cli import REPRODUCE_NOTEBOOKS
from lsnoise.docs import execute_notebooks, site_notebooks, library_notebooks, stale_outputs

def test_every_notebook_runs_and_its_committed_outputs_are_its_own(root, capsys):
    nbs = site_notebooks(root / 'nbs')
    executed, fresh = execute_notebooks(root, nbs, root / '_build', committed=REPRODUCE_NOTEBOOKS, say=lambda m: None)
    assert sorted(executed) == sorted(p.relative_to(root / 'nbs').as_posix() for p in nbs)
    ran = [p.stem for p in nbs if p.stem not in REPRODUCE_NOTEBOOKS]
    assert len(ran) >= 25 and 'index' in ran and '07b_engine' in ran
    lib = library_notebooks(root / 'nbs', REPRODUCE_NOTEBOOKS)
    stale = [f"{p.name} {why}" for p in lib for why in stale_outputs(p, executed[p.relative_to(root / 'nbs').as_posix()])]
    assert not stale, "committed outputs that are not the notebooks' own (refresh them with `lsnoise docs --keep-outputs`): " + '; '.join(stale)
    with capsys.disabled(): print(f"\n{len(nbs)} notebooks: {len(ran)} executed or cached ({fresh} processed now), {len(nbs) - len(ran)} with their committed outputs; "
                                  f"the committed outputs of {len(lib)} library notebooks checked")
