"""Instant queries to a Prometheus server's HTTP API (`kvmtop fleet`).

`GET /api/v1/query?query=...&time=...` (Prometheus HTTP API, "Instant queries"):
the answer is `{"status": "success", "data": {"resultType": "vector", "result":
[{"metric": {...}, "value": [<unix time>, "<value>"]}, ...]}}`, or `"status":
"error"` with `errorType` and `error`. Values are strings (NaN and ±Inf too).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from kvmtop.collectors.base import CollectorError
from kvmtop.model.fleet import GuestRow, HostRow, Result, build_guest_rows, build_rows, queries

Opener = Callable[..., Any]


class PrometheusClient:
    """Runs instant queries against the Prometheus at `url` (http or https).

    Args:
        url: the server's base URL, e.g. http://prometheus:9090.
        timeout_s: per query.
        opener: `urllib.request.urlopen` (injectable for tests).
    """

    def __init__(
        self, url: str, timeout_s: float = 10.0, opener: Opener = urllib.request.urlopen
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CollectorError(f"{url!r} is not an http(s) URL of a Prometheus server")
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._open = opener

    def query(self, expr: str, at_s: float | None = None) -> Result:
        """The vector of `expr` now (or at Unix time `at_s`), finite values only.

        Raises:
            CollectorError: the server is unreachable, answers an error, or not JSON.
        """
        params = {"query": expr} | ({} if at_s is None else {"time": f"{at_s:.3f}"})
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with self._open(url, timeout=self._timeout_s) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            raise CollectorError(f"Prometheus at {self.url}: {_error_of(exc)}") from None
        except (OSError, ValueError) as exc:
            raise CollectorError(f"Prometheus at {self.url}: {exc}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            raise CollectorError(f"Prometheus at {self.url}: {_message(body)}")
        data = body.get("data", {})
        if data.get("resultType") != "vector":
            raise CollectorError(f"Prometheus at {self.url}: {expr!r} is not an instant vector")
        out = []
        for series in data.get("result", []):
            value = float(series["value"][1])
            if math.isfinite(value):
                out.append((series.get("metric", {}), value))
        return out

    def queries(self, named: Mapping[str, str], at_s: float | None = None) -> dict[str, Result]:
        """Each of `named` (name → expression) at the same time."""
        return {name: self.query(expr, at_s) for name, expr in named.items()}

    def fleet(self, job: str, at_s: float | None = None) -> list[HostRow]:
        """Every host of the scrape job `job`, from one evaluation time (now)."""
        return build_rows(self.queries(queries(job), time.time() if at_s is None else at_s))

    def guests(self, job: str, instance: str, at_s: float | None = None) -> list[GuestRow]:
        """The guests of one host (`instance`), from one evaluation time (now)."""
        return build_guest_rows(
            self.queries(queries(job, instance), time.time() if at_s is None else at_s)
        )


def _message(body: object) -> str:
    """The error Prometheus gave, in one line."""
    if isinstance(body, dict):
        return f"{body.get('errorType', 'error')}: {body.get('error', 'no answer')}"
    return "not a Prometheus API answer"


def _error_of(exc: urllib.error.HTTPError) -> str:
    """An HTTP error's reason, with Prometheus's own message when it sent one."""
    try:
        return f"HTTP {exc.code}: {_message(json.loads(exc.read()))}"
    except (OSError, ValueError):
        return f"HTTP {exc.code} {exc.reason}"
