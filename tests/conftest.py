"""Test-wide set-up: the lab plugin (real guests, `lab` marker) and a pinned locale."""

from __future__ import annotations

import os
import time

pytest_plugins = ["tests.lab.fixture"]

os.environ["TZ"] = "UTC"
time.tzset()
