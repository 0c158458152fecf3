"""Hypothesis profiles for the fuzz targets.

``ci`` (the default) runs a few hundred examples per target so the normal suite stays fast;
``long`` runs at least 100,000 per target::

    HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz -p no:timeout

Each target uses the selected profile through the ``FUZZ`` settings object (see
:mod:`fuzzprofile`), never a global ``load_profile``, so the rest of the suite keeps its own
Hypothesis settings.
"""
