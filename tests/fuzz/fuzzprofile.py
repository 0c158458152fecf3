"""The Hypothesis settings of the fuzz targets: ``HYPOTHESIS_PROFILE=ci`` (default) or ``long``."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "derandomize": False, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much]}
settings.register_profile("ci", max_examples=int(os.environ.get("FUZZ_CI_EXAMPLES", "150")),
                          **_COMMON)
settings.register_profile("long", max_examples=int(os.environ.get("FUZZ_LONG_EXAMPLES",
                                                                  "100000")), **_COMMON)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    PROFILE = "ci"
FUZZ = settings(settings.get_profile(PROFILE))
"""Decorate each fuzz target with this (after ``@given``)."""
LONG = PROFILE == "long"


def fuzz(ci_examples: int) -> settings:
    """The profile, with fewer examples in ``ci`` for a target whose example is slow (a
    request through the app, a device session); the long profile keeps its count."""
    if PROFILE == "ci":
        return settings(FUZZ, max_examples=min(ci_examples, FUZZ.max_examples))
    return FUZZ
