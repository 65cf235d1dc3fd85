"The package's layering (DESIGN.md section 2a): every import points down, no module reaches into another's private names."
import ast
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parents[1] / 'lsnoise'
#: The layers, lowest first; a module may import only modules of its own layer or below.
#: The store sits below the engine: the engine asks it for its checkpoints (names, writing, reading, deleting).
LAYERS = [('core',), ('noise', 'smearing', 'losses', 'metrics', 'theory', 'labels', 'data', 'models', 'layouts'), ('config',), ('store',), ('engine',),
          ('train', 'distill', 'representations'), ('nbexec',), ('results', 'evidence', 'sweep'), ('cli', 'bench', 'docs', 'gpucheck')]
TOOLS = ('bench', 'docs', 'gpucheck')          # tools on top: nothing in the runtime imports them (the cli only dispatches to them)

def imports():
    "module -> {(imported module, names)} of every `lsnoise` import in lsnoise/*.py (function-level imports included)."
    mods = {p.stem: p for p in PKG.glob('*.py') if not p.stem.startswith('_')}
    out = {m: set() for m in mods}
    for m, p in mods.items():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom):
                mod = n.module or ''
                if n.level and not mod: targets = [(a.name, ()) for a in n.names]
                elif n.level or mod == 'lsnoise' or mod.startswith('lsnoise.'): targets = [(mod.split('.')[-1], tuple(a.name for a in n.names))]
                else: continue
                out[m] |= {(t, names) for t, names in targets if t in mods and t != m}
            elif isinstance(n, ast.Import):
                out[m] |= {(a.name.split('.')[1], ()) for a in n.names if a.name.startswith('lsnoise.') and a.name.split('.')[1] in mods}
    return out

def test_every_module_has_a_layer():
    placed = {m for layer in LAYERS for m in layer}
    assert set(imports()) <= placed, f"modules without a layer in this test: {set(imports()) - placed}"

def test_no_import_circles():
    edges = {m: {t for t, _ in v} for m, v in imports().items()}
    def reaches(a, b, seen):
        return any(x == b or (x not in seen and reaches(x, b, seen | {x})) for x in edges.get(a, ()))
    circles = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if reaches(b, a, {b})})
    assert not circles, f"import circles: {circles}"

def test_imports_point_down():
    level = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    up = [(m, t) for m, v in imports().items() for t, _ in v if level[t] > level[m]]
    assert not up, f"imports that point up (module -> a module above it): {up}"

def test_no_private_names_across_modules():
    bad = [(m, t, n) for m, v in imports().items() for t, names in v for n in names if n.startswith('_')]
    assert not bad, f"imports of another module's private names: {bad}"

def test_tools_are_imported_by_nothing_but_the_cli():
    users = [(m, t) for m, v in imports().items() for t, _ in v if t in TOOLS and m != 'cli']
    assert not users, f"runtime modules that import a tool: {users}"

def test_the_check_finds_a_circle(tmp_path, monkeypatch):
    "The circle check can fail: two modules that import each other are reported."
    for a, b in (('core', 'noise'), ('noise', 'core')): (tmp_path / f'{a}.py').write_text(f'from .{b} import x\n')
    monkeypatch.setattr(__import__(__name__), 'PKG', tmp_path)
    with pytest.raises(AssertionError, match="import circles: \\[\\('core', 'noise'\\)\\]"): test_no_import_circles()
