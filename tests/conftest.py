"""Suite-wide settings: hypothesis without per-example deadlines (machines are shared and noisy)."""

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "seedrl", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("seedrl")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls: more torch threads only add contention (restored afterwards).
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
