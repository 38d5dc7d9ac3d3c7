"""Suite-wide settings: hypothesis without per-example deadlines (machines are shared and noisy)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "seedrl", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("seedrl")
