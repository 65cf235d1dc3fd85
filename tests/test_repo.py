"Repository hygiene: the README, CI, notebooks and the exported package agree with each other."
import json, re, shutil, subprocess, sys
from pathlib import Path
import pytest
from lsnoise.cli import render_readme

BIN = Path(sys.executable).parent

def readme_commands(root):
    "The two commands at the top of the README: (main job, tests)."
    text = (root / 'README.md').read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    cmds = [line.split('#')[0].strip() for line in block.strip().splitlines()]
    return cmds[0], cmds[1]

def test_readme_names_two_commands(root):
    main, tests = readme_commands(root)
    assert (main, tests) == ('make reproduce', 'make test')

def test_ci_runs_the_readme_test_command(root):
    _, tests = readme_commands(root)
    ci = (root / '.ci' / 'run').read_text().splitlines()
    commands = [l.strip() for l in ci if l.strip() and not l.strip().startswith('#')]
    assert tests in commands, f".ci/run must run the README's test command {tests!r}"

def test_readme_is_generated_from_index(root):
    assert (root / 'README.md').read_text(encoding='utf-8') == render_readme(root / 'nbs' / 'index.ipynb'), \
        "README.md is out of date with nbs/index.ipynb: run `lsnoise readme`"

def test_notebooks_clean_and_package_exported(root, tmp_path):
    "nbdev_clean and nbdev_export, run on a copy, must change nothing: notebooks are clean and lsnoise/ is their export."
    for name in ('settings.ini', 'setup.py', 'README.md'): shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / 'nbs', tmp_path / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    shutil.copytree(root / 'lsnoise', tmp_path / 'lsnoise', ignore=shutil.ignore_patterns('__pycache__'))
    def snapshot(base):
        return {p.relative_to(base).as_posix(): p.read_bytes() for d in ('nbs', 'lsnoise') for p in sorted((base / d).rglob('*'))
                if p.is_file() and '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts}
    before = snapshot(tmp_path)
    for cmd in ('nbdev_clean', 'nbdev_export'):
        r = subprocess.run([str(BIN / cmd)], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    after = snapshot(tmp_path)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"not clean or not exported (run nbdev_clean and nbdev_export, then commit): {changed}"

def test_every_module_has_its_notebook(root):
    modules = {p.stem for p in (root / 'lsnoise').glob('*.py') if not p.stem.startswith('_')}
    exported = set()
    for nb in (root / 'nbs').glob('*.ipynb'):
        m = re.search(r'#\|\s*default_exp\s+(\w+)', nb.read_text())
        if m: exported.add(m.group(1))
    assert modules <= exported, f"modules without a source notebook: {modules - exported}"

def test_exported_cells_in_the_house_style(root):
    """Every exported cell holds at most two definitions and 40 lines; the one exception is the cell of the engine's
    `fit`, the loop a reader follows top to bottom (its signature documents each parameter), at most 55."""
    bad = []
    for nb in sorted((root / 'nbs').rglob('*.ipynb')):
        for c in json.loads(nb.read_text(encoding='utf-8'))['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or not re.match(r'\s*#\|\s*export', src): continue
            lines, defs = src.count('\n') + 1, len(re.findall(r'^(?:async def|def|class) ', src, re.M))
            cap = 55 if re.search(r'^def fit\(', src, re.M) else 40
            if lines > cap or defs > 2: bad.append(f"{nb.relative_to(root / 'nbs')}#{c.get('id')}: {lines} lines, {defs} definitions")
    assert not bad, "exported cells to split (one idea per cell, its check beside it): " + '; '.join(bad)
