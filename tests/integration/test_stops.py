"""`tenantry serve` stops cleanly on SIGTERM or SIGINT, to the process or to its whole group.

Each trial starts the command as its own process group (as a shell, systemd or `timeout`
would), keeps steady predict traffic on it (one tenant mirrored to its shadow version at
100%, the pair log flushed only every 10 minutes, so every pair is still in memory when the
stop comes), signals it and checks: every request sent before the signal got 200; after
it, 200 or a refused connection, never a 5xx; exit status 0 within 30 s; no process of its
Ray session or HAProxy left; every shadow pair of an answered request in the pair log.
Three trials in a row, each with its own Ray.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from engine.shadow import ConfigStore, ShadowTables, build_config
from engine.shadow.tables import PAIRS
from registry import Registry
from tests.conftest import wait_for
from training.cluster import WORKER_NICENESS

from .conftest import FEATURES, free_port, publish, train_bytes

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
TENANTRY = str(Path(sys.executable).with_name("tenantry"))
TENANTS = ("stop-a", "stop-b", "stop-c", "stop-d")
SHADOWED = "stop-a"
STOP_LIMIT_S = 30.0
TRIALS = (("SIGTERM", "group"), ("SIGINT", "main"), ("SIGTERM", "group"))


@dataclass
class Sent:
    """One request of the load loop: when it left and how it ended."""

    request_id: str
    tenant: str
    at: float  # monotonic
    status: int = 0  # HTTP status, 0 if none
    error: str = ""  # exception class when there was no response


@dataclass
class Trial:
    """What one start-load-signal-exit cycle observed."""

    signal: str
    target: str
    returncode: int | None = None
    stop_s: float = 0.0
    signalled_at: float = 0.0
    sent: list[Sent] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    stderr: str = ""
    pair_ids: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Four tenants; one has a shadow version mirrored at 100%."""
    root = str(tmp_path_factory.mktemp("stops") / "data" / "registry")
    reg = Registry.create(root, num_shards=2)
    publish(reg, {t: train_bytes(i) for i, t in enumerate(TENANTS)}, "stops-prod")
    publish(reg, {SHADOWED: train_bytes(40, rounds=12)}, "stops-cand", alias="shadow")
    ConfigStore(ShadowTables.for_registry(reg)).set(build_config(SHADOWED, 1.0))
    return root


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _assert_normal_priority(replica: dict[str, object], members: dict[int, str]) -> None:
    """The model host (its shadow stats) and HAProxy (a process of the Ray session) run at
    tenantry's worker niceness, not Ray's 15 (the shadow worker's idle priority is only
    ~12x below that)."""
    haproxies = [pid for pid in members if "haproxy" in _cmdline(pid).split(" ", 1)[0]]
    assert replica["niceness"] == WORKER_NICENESS and haproxies, (replica, members)
    assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in haproxies} == {WORKER_NICENESS}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _session_of_ray(temp_dir: str) -> int:
    """The session id of the Ray started under ``temp_dir`` (its raylet's)."""
    for pid in _pids():
        if "raylet" in _cmdline(pid) and temp_dir in _cmdline(pid):
            stat = _stat(pid)
            if stat:
                return int(stat[3])
    raise AssertionError(f"no raylet under {temp_dir}")


def _members(sid: int) -> dict[int, str]:
    """Live processes of session ``sid``: pid -> start time (tells a reused pid apart)."""
    out = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat and int(stat[3]) == sid and stat[0] != "Z":
            out[pid] = stat[19]
    return out


def _alive(members: dict[int, str]) -> list[int]:
    alive = []
    for pid, started in members.items():
        stat = _stat(pid)
        if stat and stat[19] == started and stat[0] != "Z":
            alive.append(pid)
    return alive


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    out = proc.stdout
    threading.Thread(target=lambda: lines.put(out.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        return ""


def _load(url: str, prefix: str, sent: list[Sent], stop: threading.Event, worker: int) -> None:
    rng = np.random.default_rng(worker)
    n = 0
    with httpx.Client(base_url=url, timeout=30,
                      limits=httpx.Limits(max_keepalive_connections=0)) as client:
        while not stop.is_set():
            tenant = TENANTS[n % len(TENANTS)]
            rid = f"{prefix}-w{worker}-{n}"
            n += 1
            item = Sent(rid, tenant, time.monotonic())
            body = {"instances": [rng.normal(size=len(FEATURES)).tolist()]}
            try:
                resp = client.post(f"/v1/tenants/{tenant}/predict", json=body,
                                   headers={"x-request-id": rid})
                item.status = resp.status_code
            except httpx.HTTPError as exc:
                item.error = type(exc).__name__
            sent.append(item)
            time.sleep(0.03)


def _run_trial(root: str, sig_name: str, target: str, prefix: str, tmp: Path) -> Trial:
    trial = Trial(sig_name, target)
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "TENANTRY_SHADOW_FLUSH_S": "600",  # pairs stay in memory until the stop
           "TENANTRY_REFRESH_INTERVAL_S": "0.5"}
    err_path = tmp / f"{prefix}.stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([TENANTRY, "serve", "--registry", root, "--port", str(port),
                                 "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True)
    members: dict[int, str] = {}
    marks: list[str] = []
    try:
        line = _first_line(proc, 240)
        assert line, f"serve did not come up: {err_path.read_text()[-3000:]}"
        doc = json.loads(line)
        url, temp_dir = doc["url"], doc["ray_temp_dir"]
        with httpx.Client(base_url=url, timeout=10) as client:
            # The shadow worker answers before the load starts, so no mirror expires.
            def worker_answers() -> dict[str, object] | None:
                body = {"instances": [[0.0] * len(FEATURES)]}
                client.post(f"/v1/tenants/{SHADOWED}/predict", json=body,
                            headers={"x-request-id": f"{prefix}-warm"})
                replica = client.get(f"/v1/tenants/{SHADOWED}/shadow").json().get("replica", {})
                return replica if "pid" in replica.get("worker", {}) else None

            replica = wait_for(worker_answers, timeout=120, every=1.0)
        sid = _session_of_ray(temp_dir)
        members = _members(sid)
        marks = [temp_dir] + sorted({part.rsplit("/", 1)[0] for pid in members
                                     for part in _cmdline(pid).split()
                                     if "tenantry-ingress-" in part})
        assert len(marks) > 1, "no HAProxy found in the Ray session"
        _assert_normal_priority(replica, members)
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(url, prefix, trial.sent, stop, w),
                                    daemon=True) for w in range(2)]
        for t in threads:
            t.start()
        time.sleep(3.0)  # deliberate: the signal comes with traffic in flight
        sig = getattr(signal, sig_name)
        trial.signalled_at = time.monotonic()
        if target == "group":
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        try:
            trial.returncode = proc.wait(STOP_LIMIT_S * 2)
        except subprocess.TimeoutExpired:
            trial.returncode = None
        trial.stop_s = time.monotonic() - trial.signalled_at
        stop.set()
        for t in threads:
            t.join(35)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        trial.stderr = err_path.read_text()
    time.sleep(0.5)  # let orphans the kernel just re-parented show up as gone or not
    trial.left = [f"{pid} {_cmdline(pid)[:120]}" for pid in _alive(members)]
    trial.left += [f"{pid} {_cmdline(pid)[:120]}" for pid in _pids()
                   if pid not in members and any(m in _cmdline(pid) for m in marks)]
    for pid in _alive(members):  # never leave them to the next trial
        os.kill(pid, signal.SIGKILL)
    log = ShadowTables.for_registry(Registry.open(root)).query(
        PAIRS, where=f"request_id LIKE '{prefix}-%'", columns="request_id")
    trial.pair_ids = set(log.column("request_id").to_pylist())
    return trial


def _check(trial: Trial) -> list[str]:
    problems = []
    name = f"{trial.signal} to the {trial.target}"
    if trial.returncode != 0:
        problems.append(f"{name}: exit status {trial.returncode}")
    if trial.stop_s >= STOP_LIMIT_S:
        problems.append(f"{name}: stop took {trial.stop_s:.1f}s")
    before = [s for s in trial.sent if s.at < trial.signalled_at]
    after = [s for s in trial.sent if s.at >= trial.signalled_at]
    if len(before) < 20:
        problems.append(f"{name}: only {len(before)} requests before the signal")
    bad_before = [s for s in before if s.status != 200]
    if bad_before:
        problems.append(f"{name}: sent before the signal, not 200: {bad_before[:5]}")
    bad_after = [s for s in after if s.status != 200 and s.error != "ConnectError"]
    if bad_after:
        problems.append(f"{name}: after the signal, neither 200 nor refused: {bad_after[:5]}")
    if trial.left:
        problems.append(f"{name}: processes left: {trial.left[:10]}")
    answered = {s.request_id for s in trial.sent if s.tenant == SHADOWED and s.status == 200}
    lost = answered - trial.pair_ids
    if not answered or lost:
        problems.append(f"{name}: {len(lost)} of {len(answered)} shadow pairs not in the log")
    return problems


def test_serve_stops_cleanly_three_times_in_a_row(registry_root: str, tmp_path: Path) -> None:
    trials = [_run_trial(registry_root, sig, target, f"trial{i}", tmp_path)
              for i, (sig, target) in enumerate(TRIALS)]
    summary = [(t.signal, t.target, t.returncode, round(t.stop_s, 1), len(t.sent),
                sum(s.error == "ConnectError" for s in t.sent)) for t in trials]
    print("trials (signal, target, exit, stop s, requests, refused):", summary)
    problems = [p for t in trials for p in _check(t)]
    assert not problems, "\n".join(problems) + "\n--- last stderr:\n" + trials[-1].stderr[-3000:]
