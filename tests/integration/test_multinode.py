"""Two Ray nodes on this machine: training and serving spread over both; one node dies.

A real two-node cluster, started the way cluster.yaml starts one (``ray start --head``, then
``ray start --address`` for a worker), each node with its own loopback address (127.0.0.2,
127.0.0.3) and custom resources (``head_res`` on the head, ``node2_res`` on the second;
``training=1`` and ``serving=1`` on both). The registry is a directory both nodes see (the
shared store, on one machine).

- The nightly job goes in as cluster.yaml documents it: ``ray job submit -- tenantry train``
  with ``TENANTRY_TRAIN_TASK_RESOURCES=training=1``; its bucket tasks ran on both nodes.
- Serving goes in as cluster.yaml does it: ``serve deploy`` of the repository's
  serve_config.yaml (API keys on, as shipped; only the node address, ports and small caches
  changed). Each model host asks for ``serving=1``, one slot per node, so Serve must put
  one replica on each node, and each node gets its own ingress (HAProxy) on its own
  address. Every tenant answers 200 through either node's ingress.
- One node's ingress is killed (its HAProxy, SIGKILL) under steady traffic to the other
  node's: that traffic does not notice, and the killed ingress is back within seconds.
- The second node is killed (SIGKILL of every process of it) under steady traffic to the
  head's ingress, which continues until HAProxy has taken the dead host out: only
  requests in flight may fail, and every tenant then answers 200 from the survivor.

Placement is read from Ray's state API (the head's dashboard, on 127.0.0.1).

This test does not use the session's Ray (``ray_session``); its cluster has its own ports,
temp dir and process sessions, and everything it started is killed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from training.cluster import NICENESS_ENV, WORKER_NICENESS

from .conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Loopback addresses the nodes advertise (each node's ingress binds its own). Not 127.0.0.1:
# `ray start` (and ray.init's _node_ip_address) replace 127.0.0.1/localhost with the
# machine's routable IP.
NODE_IP = "127.0.0.2"
NODE2_IP = "127.0.0.3"
APP = "tenantry"  # serve_config.yaml's application name
START_TIMEOUT_S = 60.0


@dataclass
class TwoNodes:
    """A running two-node cluster and how to reach and kill it."""

    gcs_address: str
    dashboard: str
    temp_dir: Path
    head: subprocess.Popen[bytes]
    node2: subprocess.Popen[bytes]
    env: dict[str, str]

    def list(self, kind: str, **filters: Any) -> list[Any]:
        """Ray's state API (``list_nodes``, ``list_tasks``, …) asked of this cluster only."""
        import ray.util.state

        lister = getattr(ray.util.state, f"list_{kind}")
        return list(lister(address=self.dashboard, filters=[(k, "=", v) for k, v in filters.items()],
                           limit=10_000, timeout=10, detail=True, raise_on_missing_output=False))


def _session_pids(sessions: set[int]) -> list[int]:
    """Processes whose session id is one of ``sessions`` (each node runs in its own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) in sessions and fields[0] != b"Z":  # [3] is the session id
            pids.append(int(entry))
    return pids


def _kill_sessions(sessions: set[int], timeout_s: float = 20.0) -> list[int]:
    """SIGKILL every process of ``sessions`` until none is left; returns survivors."""
    deadline = time.monotonic() + timeout_s
    while (pids := _session_pids(sessions)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return _session_pids(sessions)


def _ray_start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``ray start --block …`` in a new process session (so the whole node can be killed)."""
    with open(log, "wb") as out:
        return subprocess.Popen([str(BIN / "ray"), "start", "--block", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_started(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if "block forever" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    raise AssertionError(f"ray start did not come up:\n{log.read_text(errors='replace')[-3000:]}")


def _wait_for(what: str, check: Any, timeout_s: float, interval_s: float = 0.5) -> Any:
    """Poll ``check()`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - services still starting
            last = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[TwoNodes]:
    """``ray start --head`` plus one ``ray start --address`` node, on loopback."""
    # Short: Ray's unix socket paths live under it and have a ~107 byte limit.
    temp_dir = Path(tempfile.mkdtemp(prefix="tnt-mn-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "TENANTRY_"))}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0")
    env[NICENESS_ENV] = str(WORKER_NICENESS)  # as cluster.yaml starts every node
    port, dash_port = free_port(), free_port()
    common = ["--num-cpus=1", "--object-store-memory=150000000", "--disable-usage-stats"]
    head_log, node2_log = tmp_path / "head.log", tmp_path / "node2.log"
    head = _ray_start([
        "--head", f"--port={port}", f"--node-ip-address={NODE_IP}", *common,
        f"--temp-dir={temp_dir}", '--resources={"head_res": 1, "training": 1, "serving": 1}',
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
        f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
    ], head_log, env)
    sessions = {head.pid}
    node2: subprocess.Popen[bytes] | None = None
    try:
        _wait_started(head, head_log)
        node2 = _ray_start([
            f"--address={NODE_IP}:{port}", f"--node-ip-address={NODE2_IP}", *common,
            '--resources={"node2_res": 1, "training": 1, "serving": 1}',
            f"--dashboard-agent-listen-port={free_port()}",
        ], node2_log, env)
        sessions.add(node2.pid)
        _wait_started(node2, node2_log)
        nodes = TwoNodes(f"{NODE_IP}:{port}", f"http://127.0.0.1:{dash_port}", temp_dir, head,
                         node2, env)
        _wait_for("two alive nodes in the state API",
                  lambda: len(nodes.list("nodes", state="ALIVE")) == 2, START_TIMEOUT_S)
        yield nodes
    finally:
        survivors = _kill_sessions(sessions)
        for proc in (head, node2):
            if proc is not None:
                proc.wait(timeout=10)
        leftovers = _pids_mentioning(str(temp_dir))
        for pid in leftovers:  # anything that left the nodes' sessions still names their dirs
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not survivors and not leftovers, f"stray Ray processes: {survivors + leftovers}"


def _pids_mentioning(text: str) -> list[int]:
    """Live processes (not this one) whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if text.encode() in fh.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _node_ids(nodes: TwoNodes) -> dict[str, str]:
    """``{"head": node_id, "node2": node_id}`` by each node's custom resource."""
    out = {}
    for n in nodes.list("nodes"):
        res = n.resources_total or {}
        out["head" if "head_res" in res else "node2"] = n.node_id
    return out


def _generate(path: Path) -> None:
    from training.generate import GeneratorConfig, generate

    generate(str(path), GeneratorConfig(tenants=12, days=4, seed=3, num_shards=4,
                                        mean_rows=400.0, size_sigma=0.3))


def _train_job(nodes: TwoNodes, data: Path, registry: Path) -> dict[str, Any]:
    """``ray job submit -- tenantry train --json``, as cluster.yaml documents; its report."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(nodes.dashboard)
    job_id = client.submit_job(
        entrypoint=f"{sys.executable} -m engine.cli train --data {data} --registry {registry} "
                   "--json",
        runtime_env={"env_vars": {"TENANTRY_RAY_ADDRESS": "auto",
                                  "TENANTRY_TRAIN_TASK_RESOURCES": "training=1",
                                  "TENANTRY_TRAIN_N_ESTIMATORS": "10",
                                  "TENANTRY_TRAIN_WINDOW_DAYS": "4"}})
    status = _wait_for("the training job to finish", lambda: (
        s if (s := client.get_job_status(job_id)) in
        (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) else None), 150, 1.0)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    lines = [ln for ln in logs.splitlines() if ln.startswith('{"run_id"')]
    assert len(lines) == 1, logs[-4000:]
    return dict(json.loads(lines[0]))


def _serve_deploy(nodes: TwoNodes, registry: Path, tmp_path: Path) -> tuple[int, str]:
    """``serve deploy`` of serve_config.yaml, each node's ingress on its own loopback
    address (``host: auto``), API keys as shipped; returns the port and an admin token."""
    from engine.serving.auth import add_key

    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (app,) = config["applications"]
    assert app["name"] == APP and app["args"]["replica_resources"] == "serving=1"
    assert app["args"]["api_keys_file"] and "allow_anonymous" not in app["args"]
    keys = tmp_path / "keys.json"
    token = add_key(str(keys), None)
    port = free_port()
    app["args"].update(registry=str(registry), host="auto", port=port, cache_mb=8,
                       refresh_interval_s=0.5, replica_ttl_s=3.0, api_keys_file=str(keys),
                       ingress_check_interval_ms=250)
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([str(BIN / "serve"), "deploy", str(path), "--address", nodes.dashboard],
                          env=nodes.env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return port, token


def _predict(client: httpx.Client, tenant: str, width: int) -> httpx.Response:
    return client.post(f"/v1/tenants/{tenant}/predict", json={"instances": [[0.5] * width]})


class Steady:
    """Predicts in a loop against one URL on a thread; statuses recorded (0: no answer)."""

    def __init__(self, url: str, token: str, tenants: list[str], width: int) -> None:
        self.statuses: list[int] = []
        self.bodies: list[str] = []  # the first few non-200 answers, for failure messages
        self._stop = threading.Event()
        self._args = (url, token, tenants, width)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        url, token, tenants, width = self._args
        with httpx.Client(base_url=url, timeout=30,
                          headers={"authorization": f"Bearer {token}"}) as c:
            i = 0
            while not self._stop.is_set() and i < 20_000:
                try:
                    resp = _predict(c, tenants[i % len(tenants)], width)
                    self.statuses.append(resp.status_code)
                    if resp.status_code != 200 and len(self.bodies) < 5:
                        self.bodies.append(resp.text[:300])
                except httpx.HTTPError:
                    self.statuses.append(0)
                i += 1
                time.sleep(0.01)

    def answered(self, more: int, timeout: float = 60) -> None:
        """Wait until ``more`` further requests have been answered (or failed)."""
        target = len(self.statuses) + more
        _wait_for(f"{more} more requests", lambda: len(self.statuses) >= target, timeout, 0.05)

    def stop(self) -> list[int]:
        """Stop; the failed requests' statuses."""
        self._stop.set()
        self._thread.join(timeout=60)
        assert len(self.statuses) > 50, len(self.statuses)
        return [s for s in self.statuses if s != 200]


def test_two_nodes_train_serve_and_survive_losing_one(cluster: TwoNodes, tmp_path: Path) -> None:
    from engine.serving.launch import wait_ready
    from registry import Registry
    from training.features import FEATURE_NAMES

    node = _node_ids(cluster)
    assert set(node) == {"head", "node2"}, node

    # -- training: bucket tasks on both nodes, models into the shared registry -------------
    data, registry = tmp_path / "features", tmp_path / "registry"
    _generate(data)
    Registry.create(str(registry), num_shards=4)  # once, as README's cluster steps say
    report = _train_job(cluster, data, registry)
    assert report["buckets"] >= 2 and report["published"] == report["trained"] > 0, report

    def bucket_tasks() -> list[Any]:
        done = [t for t in cluster.list("tasks", state="FINISHED") if "_BucketFn" in t.name]
        return done if len(done) >= report["buckets"] else []

    tasks = _wait_for("the bucket tasks in the state API", bucket_tasks, 30)
    assert {t.node_id for t in tasks} == set(node.values()), [(t.name, t.node_id) for t in tasks]

    production = Registry.open(str(registry)).production_versions()
    assert len(production) == report["promoted"] > 0

    # -- serving: one model host and one ingress on each node ------------------------------
    port, token = _serve_deploy(cluster, registry, tmp_path)
    urls = {"head": f"http://{NODE_IP}:{port}", "node2": f"http://{NODE2_IP}:{port}"}
    for url in urls.values():
        wait_ready(url, replicas=2, timeout_s=120)
    actors = cluster.list("actors", state="ALIVE")
    hosts = [a.node_id for a in actors if a.class_name == f"ServeReplica:{APP}:ModelHost"]
    ingresses = [a.node_id for a in actors if a.class_name == "_IngressNode"]
    assert sorted(hosts) == sorted(node.values()), actors
    assert sorted(ingresses) == sorted(node.values()), actors

    width = len(FEATURE_NAMES)
    auth = {"authorization": f"Bearer {token}"}
    tenants = sorted(production)
    for url in urls.values():
        with httpx.Client(base_url=url, timeout=30, headers=auth) as client:
            assert _predict(client, tenants[0], width).status_code == 200
            assert httpx.post(f"{url}/v1/tenants/{tenants[0]}/predict", timeout=30,
                              json={"instances": [[0.5] * width]}).status_code == 401
            for tenant, mv in production.items():
                resp = _predict(client, tenant, width)
                assert resp.status_code == 200, resp.text
                assert resp.json()["model_version"] == mv.version

    # -- kill node 2's ingress under steady traffic to the head's ----------------------------
    # (found by its node's process session: this test's driver is not a client of that Ray)
    (haproxy,) = [pid for pid in _session_pids({cluster.node2.pid})
                  if b"haproxy" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    steady = Steady(urls["head"], token, tenants, width)
    steady.answered(50)
    os.kill(haproxy, signal.SIGKILL)
    _wait_for("node 2's ingress to come back", lambda: httpx.get(
        f"{urls['node2']}/readyz", timeout=5).json()["replicas"] == 2, 30, 0.25)
    failed = steady.stop()
    assert failed == [], f"the head's ingress failed {failed}: {steady.bodies}"

    # -- kill node 2 under steady traffic to the head's ingress ------------------------------
    steady = Steady(urls["head"], token, tenants, width)
    steady.answered(50)
    assert _kill_sessions({cluster.node2.pid}) == []
    # HAProxy's health checks take the dead host out within a second or two; the directory
    # forgets it once its heartbeats lapse (3 s TTL; longer if the directory actor lived on
    # node 2: Ray must declare the node dead and restart it on the head).
    _wait_for("the head's ingress to drop the dead model host", lambda: httpx.get(
        f"{urls['head']}/readyz", timeout=5).json()["replicas"] == 1, 90, 0.5)
    steady.answered(50)  # traffic goes on through the survivor
    failed = steady.stop()
    assert len(failed) <= 2, f"{len(failed)}/{len(steady.statuses)} failed " \
                             f"({sorted(set(failed))}): only requests in flight on the dead " \
                             f"node may fail: {steady.bodies}"
    with httpx.Client(base_url=urls["head"], timeout=30, headers=auth) as client:
        for tenant, mv in production.items():
            resp = _predict(client, tenant, width)
            assert resp.status_code == 200, resp.text
            assert resp.json()["model_version"] == mv.version
