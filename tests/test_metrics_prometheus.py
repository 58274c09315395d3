"""The provisioner's metrics, scraped by a real Prometheus server during a
real burst on the local provider; every PromQL expression of the shipped
Grafana dashboard answered by that server; nothing secret in a scrape."""

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.realburst import run_real_burst

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[1] / "packaging/grafana/condor-cloud.json"
SCRAPE = 1.0      # seconds
CYCLE = 2.0       # the demo's CLOUD_PLUGINS_CYCLE_INTERVAL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


@pytest.fixture
def prometheus(tmp_path):
    """A Prometheus server (Debian's) scraping 127.0.0.1:<port> every second."""
    target, web = free_port(), free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(f"global:\n  scrape_interval: {SCRAPE:g}s\n  evaluation_interval: 1s\n"
                    f"scrape_configs:\n  - job_name: condor_cloud\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{target}']\n")
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(["prometheus", f"--config.file={conf}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{web}"
    try:
        for _ in range(100):
            try:
                if "Ready" in get(api + "/-/ready", 1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("prometheus did not start: " +
                               (tmp_path / "prometheus.log").read_text()[-2000:])
        yield target, api
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def query(api: str, expr: str, **params) -> list:
    kind = "query_range" if "start" in params else "query"
    url = f"{api}/api/v1/{kind}?" + urllib.parse.urlencode(dict(query=expr, **params))
    doc = json.loads(get(url))
    assert doc["status"] == "success", (expr, doc)
    return doc["data"]["result"]


def scalar(api: str, expr: str) -> float:
    result = query(api, expr)
    assert len(result) == 1, (expr, result)
    return float(result[0]["value"][1])


def test_real_prometheus_scrapes_a_burst_and_answers_the_dashboard(tmp_path, prometheus):
    target, api = prometheus
    scrapes = []

    secrets = set()

    def scrape(burst):   # what the endpoint shows, and the keys and tokens, while it runs
        for d in ("passwords.d", "tokens.d"):
            for f in burst.base.rglob(f"{d}/*"):
                try:
                    secrets.add(f.read_bytes().strip())
                except OSError:
                    pass
        if not scrapes or time.time() - scrapes[-1][0] > 5:
            try:
                scrapes.append((time.time(), get(f"http://127.0.0.1:{target}/metrics", 2)))
            except OSError:
                pass

    started = time.time()
    real = run_real_burst(tmp_path / "real", extra_knobs={
        "CLOUD_PLUGINS_METRICS_PORT": target,
        # One unit per instance-second: the cost counter reads in seconds.
        "CLOUD_PLUGINS_LOCAL1_COST_PER_HOUR": 3600}, during=scrape, linger=3 * CYCLE + 2 * SCRAPE)
    assert real["jobs_completed"] == 8 and real["leftover_processes"] == []
    time.sleep(2 * SCRAPE)

    # Instances went up, and back to 0 once every node was gone.
    peak = scalar(api, "max_over_time(sum(condor_cloud_instances)[10m:1s])")
    assert peak == real["vms_started"] == 2
    assert scalar(api, "sum(last_over_time(condor_cloud_instances[10m]))") == 0
    # Creates counted once per instance started.
    assert scalar(api, "sum(last_over_time(condor_cloud_creates_total[10m]))") == 2
    # Cost: instance-seconds x price; the provisioner bills from its request to
    # the cycle that saw the instance gone: within a cycle and a scrape each.
    cost = scalar(api, "sum(last_over_time(condor_cloud_cost_total[10m]))")
    seconds = sum(i["gone"] - i["requested"] for i in real["instances"])
    assert abs(cost - seconds) <= real["vms_started"] * (CYCLE + SCRAPE), (cost, seconds)

    # The same cost by accounting group: the jobs' Owner (no AcctGroup), and idle.
    groups = {r["metric"]["group"]: float(r["value"][1]) for r in query(
        api, "sum by (group) (last_over_time(condor_cloud_group_cost_total[10m]))")}
    assert set(groups) - {"(idle)"} and all(v > 0 for v in groups.values()), groups
    assert abs(sum(groups.values()) - cost) <= real["vms_started"] * (CYCLE + SCRAPE), groups

    # Every expression of the dashboard returns data from this server.
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 6
    for panel in panels:
        for t in panel["targets"]:
            result = query(api, t["expr"], start=started, end=time.time(), step=1)
            assert result and any(r["values"] for r in result), (panel["title"], t["expr"])

    # Nothing secret in a scrape: no token, no key, no instance id.
    assert scrapes, "the endpoint was never reached during the burst"
    text = scrapes[-1][1]
    assert "condor_cloud_instances{" in text and "eyJ" not in text
    assert len(secrets) >= 2, "no key or token file found to look for"
    leaked = sum(1 for s in secrets if s and s.decode(errors="replace") in text)
    assert leaked == 0
    ids = [i["id"] for i in real["instances"]]
    assert not any(i in text for i in ids)
