"The benchmark command runs end to end and writes its JSON (its ratios are measured, not asserted: see `lsnoise bench`)."
import json, subprocess, sys
from pathlib import Path

def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / 'bench.json'
    r = subprocess.run([str(Path(sys.executable).parent / 'lsnoise'), 'bench', '--quick', '--no-fail', '--json', str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    for key in ('loss_overhead_max', 'noise_speedup', 'noise_vectorised_s', 'loss_overhead', 'machine', 'targets'):
        assert key in res
    for k, t in res['targets'].items():            # the verdicts follow from the numbers, and the printed table is the JSON's
        op, bound = t['target'].split()
        assert t['value'] == res[k] and t['met'] == (res[k] <= float(bound) if op == '<=' else res[k] >= float(bound)), (k, t)
        assert f"{k:<22} {t['value']:8.3f}  target {t['target']:<8} {'met' if t['met'] else 'NOT MET'}" in r.stdout, k
    assert 'Targets:' in r.stdout and 'corrupt_labels' in r.stdout
    # the vectorised and looped draws come from the same T
    assert abs(res['noise']['flip_rate_vectorised'] - res['noise']['flip_rate_loop']) < 0.01
