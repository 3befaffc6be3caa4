"""A real Prometheus and Alertmanager (Debian's packages, started by hand: no
systemd) scraping three kvmtop endpoints for the whole pytest session:

- `kvmtop serve` on the lab (the session recording's config: the uplinks' capacity);
- `kvmtop serve --replay examples/lab-sample.kvmtop --host replay-demo` (the demo:
  a leak, pinned guests stealing, a saturated switch);
- `kvmtop serve --replay tests/fixtures/recordings/lab-sample.kvmtop --host
  replay-old` (the older two-minute lab recording).

Prometheus evaluates contrib/prometheus/kvmtop-alerts.yml every 5 s and sends to
the Alertmanager, which routes every alert to a webhook in the pytest process
(`Webhook`): its log keeps every notification, firing and resolved, so the judging
tests (tests/e2e/test_lab_prometheus.py, run last with the recording's) see what an
on-call engineer would have been paged with. Started by the `lab` fixture with the
session recording; everything listens on loopback only, on ports the OS picks.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "prometheus" / "kvmtop-alerts.yml"
REPLAYED = {
    "replay-demo": ROOT / "examples" / "lab-sample.kvmtop",
    "replay-old": ROOT / "tests" / "fixtures" / "recordings" / "lab-sample.kvmtop",
}
EVERY_S = 5
"""Prometheus's scrape and evaluation interval here."""


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Notification:
    """One alert in one Alertmanager webhook call."""

    received_s: float
    status: str
    """"firing" or "resolved"."""
    labels: dict[str, str]
    annotations: dict[str, str]


class Webhook(ThreadingHTTPServer):
    """The Alertmanager's receiver: keeps every alert of every notification."""

    def __init__(self) -> None:
        self.log: list[Notification] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        threading.Thread(target=self.serve_forever, name="am-webhook", daemon=True).start()

    @property
    def url(self) -> str:
        """Where the Alertmanager posts."""
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"

    def notifications(self) -> list[Notification]:
        """Every alert received so far, oldest first."""
        with self.lock:
            return list(self.log)


class _WebhookHandler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.time()
        with self.server.lock:
            for alert in body.get("alerts", []):
                self.server.log.append(
                    Notification(
                        now, alert["status"], alert["labels"], alert.get("annotations", {})
                    )
                )
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        pass


@dataclass
class SessionPrometheus:
    """The processes, their addresses, and the webhook's log."""

    directory: Path
    started_s: float
    targets: dict[str, str]
    """kvmtop endpoint (host:port, Prometheus's `instance`) → what it serves:
    "live" or the replayed host's name."""
    prometheus_url: str
    alertmanager_url: str
    webhook: Webhook
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant PromQL query's result vector."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alive(self) -> list[str]:
        """What died: the command line of every process that is no longer running."""
        return [" ".join(map(str, p.args)) for p in self.procs if p.poll() is not None]

    def close(self) -> None:
        """Stop everything (session teardown)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()
        self.webhook.shutdown()
        self.webhook.server_close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Poll `url` until it answers 200 (the process must stay up meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"{proc.args} exited {proc.returncode}"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as reply:
            if reply.status == 200:
                return
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout_s} s"
        time.sleep(0.5)


STACK_MARK = "KVMTOP_LAB_STACK"
"""Set in the environment of every process of the stack, so that `tests/lab/lab down`
finds and stops what a killed pytest session left running."""


def start_prometheus(directory: Path, config: Path, interval_s: float) -> SessionPrometheus:
    """Start the three kvmtop endpoints, the Alertmanager and Prometheus."""
    directory.mkdir(parents=True, exist_ok=True)
    env = os.environ | {STACK_MARK: "1"}
    webhook = Webhook()
    stack = SessionPrometheus(directory, time.time(), {}, "", "", webhook)
    try:
        serves = [("live", ["--config", str(config), "-d", f"{interval_s:g}"])]
        serves += [
            (host, ["--replay", str(path), "--host", host]) for host, path in REPLAYED.items()
        ]
        for name, args in serves:
            port = free_port()
            log = (directory / f"serve-{name}.log").open("wb")
            stack.logs.append(log)
            stack.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "kvmtop",
                        "serve",
                        *args,
                        "--listen",
                        f"127.0.0.1:{port}",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            stack.targets[f"127.0.0.1:{port}"] = name
        am_port, prom_port = free_port(), free_port()
        (directory / "alertmanager.yml").write_text(
            json.dumps(
                {
                    "route": {
                        "receiver": "pytest",
                        "group_by": ["..."],
                        "group_wait": "1s",
                        "group_interval": "5s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [
                        {
                            "name": "pytest",
                            "webhook_configs": [{"url": webhook.url, "send_resolved": True}],
                        }
                    ],
                }
            )
        )
        (directory / "prometheus.yml").write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": f"{EVERY_S}s",
                        "evaluation_interval": f"{EVERY_S}s",
                    },
                    "rule_files": [str(RULES)],
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
                        ]
                    },
                    "scrape_configs": [
                        {
                            "job_name": "kvmtop",
                            "scrape_timeout": "5s",
                            "static_configs": [{"targets": list(stack.targets)}],
                        }
                    ],
                }
            )
        )
        for name, cmd in (
            (
                "alertmanager",
                [
                    "prometheus-alertmanager",
                    f"--config.file={directory / 'alertmanager.yml'}",
                    f"--storage.path={directory / 'alertmanager-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
            ),
            (
                "prometheus",
                [
                    "prometheus",
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
            ),
        ):
            log = (directory / f"{name}.log").open("wb")
            stack.logs.append(log)
            stack.procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        stack.alertmanager_url = f"http://127.0.0.1:{am_port}"
        stack.prometheus_url = f"http://127.0.0.1:{prom_port}"
        _wait_ready(f"{stack.alertmanager_url}/-/ready", stack.procs[-2])
        _wait_ready(f"{stack.prometheus_url}/-/ready", stack.procs[-1])
    except BaseException:
        stack.close()
        raise
    return stack
