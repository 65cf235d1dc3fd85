import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='session')
def root() -> Path:
    return ROOT

# hypothesis: deterministic in CI, a few more examples locally
try:
    from hypothesis import settings, HealthCheck
    settings.register_profile('ci', max_examples=60, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile('dev', max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile('ci' if os.environ.get('CI') else 'dev')
except ImportError:
    pass
