"""TEMPORARY: ``cpu_threads`` lives in ``hand_vae.settings``; delete this file once
``hand_vae/cli/evaluate.py`` and ``hand_vae/cli/fit.py`` import it from there."""

from hand_vae.settings import cpu_threads  # noqa: F401
