"""Hypothesis profiles (the default suite stays fast; ``HYPOTHESIS_PROFILE=long`` is the soak) and the
session-wide NATS server fixture (``tests.nats_server``).

``long`` raises every property test's example count and, through ``tests.hostile_json.SCALE``,
the number of generated requests the end-to-end input suite sends.
"""

from __future__ import annotations

import os

from hypothesis import settings

from tests.nats_server import nats_url  # noqa: F401  (a fixture for every test)

settings.register_profile("long", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
