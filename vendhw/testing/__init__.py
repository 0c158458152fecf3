"""Test helpers for integrators: the ``vendhw`` pytest plugin (:mod:`.pytest_plugin`)."""
