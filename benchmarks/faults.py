"""Fault campaign: what each failure costs a serving app under steady open-loop load.

    python benchmarks/faults.py [--tenants 24] [--rate 40] [--phase 10] [--outage 30]
                                [--out benchmarks/results/faults.json]

One local Ray, one tenantry app (HAProxy ingress + 2 model hosts) over a fresh registry
(on a 64 MiB tmpfs when run as root, so the disk can really fill up), one tenant mirrored
to a shadow version at 100%. Under steady load (``--rate`` req/s, single rows, keep-alive
clients on loopback, arrivals on a fixed schedule) each scenario injects one fault:

- ``kill_host``: SIGKILL the model-host replica serving the shadowed tenant;
- ``kill_ingress``: SIGKILL the HAProxy process (its ingress actor starts another);
- ``kill_shadow_worker``: SIGKILL the shadow worker actor's process (Ray restarts it);
- ``kill_directory``: kill the directory actor (Ray restarts it, empty; hosts re-register);
- ``registry_unreadable``: the registry's index unreadable for ``--outage`` s (``chmod 000``;
  as root, whom modes do not stop, the directory is swapped for a file), then restored:
  hosts keep serving their last snapshot and ``/readyz`` says ``"stale": true``;
- ``publish_promote_rollback``: publish new versions, roll back, promote again;
- ``disk_full_start`` / ``disk_full_mid_run``: ``tenantry train`` with the registry's disk
  full from the start / filled once the run's first artifact is written (real ENOSPC on
  the tmpfs; skipped when not root), then the same run again with room.

For each: requests sent, requests failed (non-200 or no answer), recovery time (from the
fault until the scenario's own check says the app is whole again), and data lost (shadow
pairs of answered mirrored requests missing from the pair log after a flush, and any
logged twice; for
``disk_full_*``, also how far the failed run got: its publish state, ``none`` when nothing
of it is visible). Prints the table and
writes it to ``--out``. ``tests/integration/test_faults.py`` runs the cheap scenarios
against the test session's app with this module's functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.shadow import ConfigStore, ShadowTables, build_config
from engine.shadow.tables import PAIRS
from registry import AliasMove, NewVersion, Registry

FEATURES = ("f0", "f1", "f2", "f3", "f4")
SHADOWED = "fault-shadow"
RECOVERY_LIMIT_S = 90.0


# -- load -------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One request: when it was due, its tenant and id, and how it ended."""

    due: float  # monotonic
    tenant: str
    request_id: str
    status: int = 0  # 0: no HTTP answer
    error: str = ""
    version: str = ""  # x-model-version


class SteadyLoad:
    """Open-loop single-row predicts at a fixed rate from a few keep-alive clients.

    Arrivals follow the schedule whatever the answers do (a late request is sent late,
    and counts as failed if it waited longer than ``max_lag_s``), so a slow or broken
    server cannot hide behind fewer requests.
    """

    def __init__(self, url: str, tenants: list[str], rate: float, prefix: str,
                 weights: dict[str, float] | None = None, workers: int = 8,
                 max_lag_s: float = 5.0) -> None:
        self.url = url
        self.rate = rate
        self.prefix = prefix
        self.max_lag_s = max_lag_s
        w = np.array([(weights or {}).get(t, 1.0) for t in tenants], float)
        self._tenants = tenants
        self._p = w / w.sum()
        self.outcomes: list[Outcome] = []
        self._due: queue.Queue[tuple[float, str, str] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"load-{i}")
                         for i in range(workers)]
        self._clock = threading.Thread(target=self._schedule, daemon=True, name="load-clock")

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        self._clock.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._clock.join(5)
        for _ in self._threads:
            self._due.put(None)
        for t in self._threads:
            t.join(40)

    def _schedule(self) -> None:
        rng = np.random.default_rng(abs(hash(self.prefix)) % 2**32)
        start, n = time.monotonic(), 0
        while not self._stop.is_set():
            due = start + n / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            tenant = str(rng.choice(self._tenants, p=self._p))
            self._due.put((due, tenant, f"{self.prefix}-{n}"))
            n += 1

    def _work(self) -> None:
        rng = np.random.default_rng()
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while (item := self._due.get()) is not None:
                due, tenant, rid = item
                out = Outcome(due, tenant, rid)
                if time.monotonic() - due > self.max_lag_s:
                    out.error = "generator lag"
                else:
                    body = {"instances": [rng.normal(size=len(FEATURES)).tolist()]}
                    try:
                        resp = client.post(f"/v1/tenants/{tenant}/predict", json=body,
                                           headers={"x-request-id": rid})
                        out.status = resp.status_code
                        out.version = resp.headers.get("x-model-version", "")
                    except httpx.HTTPError as exc:
                        out.error = type(exc).__name__
                self.outcomes.append(out)

    @property
    def failed(self) -> list[Outcome]:
        """Requests that did not get a 200."""
        return [o for o in self.outcomes if o.status != 200]


# -- the app under test -----------------------------------------------------------------
@dataclass
class Target:
    """A running app and what the scenarios need to know about it."""

    url: str
    app_name: str
    registry_root: str
    tenants: list[str]
    replicas: int
    flush_s: float
    rate: float = 40.0
    phase_s: float = 10.0
    outage_s: float = 30.0
    ray_address: str = ""
    seq: list[int] = field(default_factory=lambda: [0])

    def prefix(self, scenario: str) -> str:
        """A request-id prefix unique to one run of a scenario."""
        self.seq[0] += 1
        return f"fault-{scenario}-{os.getpid()}-{self.seq[0]}-{int(time.time())}"

    def load(self, prefix: str) -> SteadyLoad:
        """Steady load, a quarter of it on the shadowed tenant."""
        return SteadyLoad(self.url, self.tenants, self.rate, prefix,
                          weights={SHADOWED: len(self.tenants) / 3})

    def get(self, path: str) -> Any:
        """GET a JSON document from the app (None when it cannot answer)."""
        try:
            return httpx.get(self.url + path, timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return None

    def whole(self) -> bool:
        """Every replica routed, the registry fresh."""
        doc = self.get("/readyz") or {}
        return bool(doc.get("ready")) and doc.get("replicas") == self.replicas \
            and not doc.get("stale")

    def shadow_stats(self) -> dict[str, Any]:
        """The shadowed tenant's replica and its worker (pids among them)."""
        doc = self.get(f"/v1/tenants/{SHADOWED}/shadow") or {}
        replica: dict[str, Any] = doc.get("replica") or {}
        return replica


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    requests: int
    failed: int
    recovery_s: float | None
    data_lost: str
    notes: str = ""
    failed_after_recovery: int = 0  # failed requests due more than 1 s after recovery
    stale_seen: bool | None = None  # registry_unreadable: /readyz said stale meanwhile
    duplicated: int = 0  # answered mirrored requests whose pair is in the log more than once


def wait_until(cond: Callable[[], Any], limit_s: float = RECOVERY_LIMIT_S,
               every: float = 0.1) -> float | None:
    """Seconds until ``cond()`` held (None: not within ``limit_s``)."""
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        if cond():
            return time.monotonic() - began
        time.sleep(every)
    return None


def lost_pairs(target: Target, load: SteadyLoad) -> tuple[int, int, int]:
    """(missing, answered, duplicated): shadowed-tenant requests answered 200 whose pair is
    not in the pair log once every worker has had time to flush, and those logged twice."""
    answered = {o.request_id for o in load.outcomes if o.tenant == SHADOWED and o.status == 200}
    if not answered:
        return 0, 0, 0
    tables = ShadowTables.for_registry(Registry.open(target.registry_root))

    def logged() -> list[str]:
        log = tables.query(PAIRS, where=f"request_id LIKE '{load.prefix}-%'",
                           columns="request_id")
        return [str(r) for r in log.column("request_id").to_pylist()]

    wait_until(lambda: not answered - set(logged()), limit_s=target.flush_s * 2 + 10,
               every=1.0)
    ids = logged()
    return len(answered - set(ids)), len(answered), len(ids) - len(set(ids))


def _row(name: str, target: Target, load: SteadyLoad, recovery: float | None,
         notes: str = "", recovered_at: float | None = None) -> Row:
    missing, answered, duplicated = lost_pairs(target, load)
    late = 0 if recovered_at is None else sum(o.due > recovered_at + 1.0 for o in load.failed)
    kinds: dict[str, int] = {}
    for o in load.failed:
        key = str(o.status) if o.status else o.error
        kinds[key] = kinds.get(key, 0) + 1
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
    return Row(name, len(load.outcomes), len(load.failed),
               None if recovery is None else round(recovery, 1),
               f"{missing} of {answered} shadow pairs"
               + (f" ({duplicated} logged twice)" if duplicated else ""),
               "; ".join(p for p in (notes, detail and f"failures {detail}") if p), late,
               duplicated=duplicated)


def _fault(name: str, target: Target, inject: Callable[[], Callable[[], bool]],
           notes: Callable[[], str] = lambda: "") -> Row:
    """Load, inject (it returns the recovery check), wait for recovery, load a bit more."""
    with target.load(target.prefix(name)) as load:
        time.sleep(2.0)
        injected = time.monotonic()
        recovered = inject()
        recovery = wait_until(recovered)
        time.sleep(target.phase_s)
    return _row(name, target, load, recovery, notes(),
                None if recovery is None else injected + recovery)


def _sigkill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- scenarios --------------------------------------------------------------------------
def _live(target: Target) -> set[str]:
    """Replica ids the app's directory lists as live (empty while it restarts)."""
    import ray

    from engine.serving.directory import find_directory

    directory = find_directory(target.app_name)
    try:
        endpoints = ray.get(directory.live.remote(), timeout=5) if directory else []
    except Exception:  # noqa: BLE001 - restarting
        return set()
    return {ep.replica_id for ep in endpoints}


def kill_host(target: Target) -> Row:
    """SIGKILL the model host serving the shadowed tenant; Serve starts another, which
    takes the dead one's slot (and tenants) once the directory lets the old one go."""
    def inject() -> Callable[[], bool]:
        before = _live(target)
        _sigkill(int(target.shadow_stats()["pid"]))

        def replaced() -> bool:
            live = _live(target)
            return len(live) == target.replicas and live != before and target.whole()
        return replaced
    return _fault("kill_host", target, inject)


def _ingress_info(target: Target) -> dict[str, Any]:
    import ray

    from engine.ingress.node import find_ingresses

    actor = next(iter(find_ingresses(target.app_name).values()))
    return dict(ray.get(actor.info.remote(), timeout=10))


def kill_ingress(target: Target) -> Row:
    """SIGKILL HAProxy; its ingress actor starts it again and re-applies the slots."""
    def inject() -> Callable[[], bool]:
        pid = int(_ingress_info(target)["pid"])
        _sigkill(pid)
        return lambda: _ingress_info(target).get("pid") not in (None, pid) and target.whole()
    return _fault("kill_ingress", target, inject)


def kill_shadow_worker(target: Target) -> Row:
    """SIGKILL the shadowed tenant's shadow worker; Ray restarts the actor."""
    def inject() -> Callable[[], bool]:
        # A replica learns its worker's pid from the worker's first answer (a new replica's
        # worker may still be starting).
        seen: list[dict[str, Any]] = [{}]

        def worker_known() -> bool:
            seen[0] = target.shadow_stats()
            return "pid" in seen[0].get("worker", {})
        if wait_until(worker_known, limit_s=120) is None:
            raise RuntimeError("the shadowed tenant's replica never reported its worker")
        replica, pid = seen[0]["pid"], int(seen[0]["worker"]["pid"])
        _sigkill(pid)

        def replaced() -> bool:  # the same replica reports a worker in another process
            now = target.shadow_stats()
            return now.get("pid") == replica and \
                now.get("worker", {}).get("pid") not in (None, pid)
        return replaced
    return _fault("kill_shadow_worker", target, inject)


def kill_directory(target: Target) -> Row:
    """Kill the directory actor (Ray restarts it empty; hosts heartbeat back in)."""
    import ray

    from engine.serving.directory import find_directory

    def inject() -> Callable[[], bool]:
        directory = find_directory(target.app_name)
        assert directory is not None, "no directory actor"
        ray.kill(directory, no_restart=False)
        return lambda: len(_live(target)) == target.replicas and target.whole()
    return _fault("kill_directory", target, inject)


@contextlib.contextmanager
def unreadable(path: Path) -> Iterator[str]:
    """``path`` (a directory) unreadable until the block ends; yields how.

    ``chmod 000`` stops everyone but root, whom file modes do not stop: as root the
    directory is moved aside and a file takes its name, so every read fails (ENOTDIR).
    """
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0)
        try:
            yield "chmod 000"
        finally:
            path.chmod(mode)
        return
    aside = path.with_name(f"{path.name}.unreadable-{os.getpid()}")
    path.rename(aside)
    try:
        path.touch()
        yield "swapped for a file (root ignores chmod 000)"
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        aside.rename(path)


def registry_unreadable(target: Target) -> Row:
    """The registry's index unreadable for ``outage_s``: serving goes on, /readyz is stale."""
    seen_stale = [False]
    how = [""]
    with target.load(target.prefix("registry_unreadable")) as load:
        time.sleep(2.0)
        with unreadable(Path(target.registry_root) / "index") as how[0]:
            deadline = time.monotonic() + target.outage_s
            while time.monotonic() < deadline:
                doc = target.get("/readyz") or {}
                seen_stale[0] = seen_stale[0] or bool(doc.get("stale"))
                time.sleep(0.5)
        restored = time.monotonic()
        recovery = wait_until(target.whole)
        time.sleep(2.0)
    note = (f"index {how[0]} for {target.outage_s:g}s; /readyz stale during it: "
            f"{'yes' if seen_stale[0] else 'NO'}; recovery counted from the restore")
    row = _row("registry_unreadable", target, load, recovery, note,
               None if recovery is None else restored + recovery)
    row.stale_seen = seen_stale[0]
    return row


def _train(seed: int, rounds: int = 6) -> bytes:
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, len(FEATURES)))
    y = (x[:, 0] * (1 + seed % 3) - x[:, 1] + 0.3 * rng.normal(size=300) > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1,
                         "seed": seed}, xgb.DMatrix(x, y, feature_names=list(FEATURES)), rounds)
    return bytes(booster.save_raw("ubj"))


def publish(reg: Registry, models: dict[str, bytes], run_id: str,
            alias: str = "production") -> dict[str, int]:
    """Stage and publish one version per tenant in one run; tenant -> version."""
    staged = [reg.stage_artifact(t, data, run_id) for t, data in models.items()]
    reg.publish(run_id, [NewVersion(s, FEATURES, {"auc": 0.9}) for s in staged],
                [AliasMove(s.tenant_id, alias, s.version) for s in staged])
    return {s.tenant_id: s.version for s in staged}


def publish_promote_rollback(target: Target) -> Row:
    """Publish a new production version of some tenants, roll them back, promote again."""
    reg = Registry.open(target.registry_root)
    movers = [t for t in target.tenants if t != SHADOWED][:4]
    prefix = target.prefix("publish_promote_rollback")
    versions: dict[str, int] = {}
    with target.load(prefix) as load:
        time.sleep(2.0)
        versions = publish(reg, {t: _train(hash(prefix + t) % 1000) for t in movers},
                           prefix.replace("fault-", "run-"))
        time.sleep(3.0)
        for t in movers:
            reg.rollback(t, reason="fault campaign")
        time.sleep(3.0)
        began = time.monotonic()
        for t in movers:
            reg.promote(t, versions[t], reason="fault campaign")

        def serving_new() -> bool:
            recent = [o for o in load.outcomes[-int(target.rate * 2):]
                      if o.tenant in versions and o.due > began + 1.0]
            return bool(recent) and all(o.version == str(versions[o.tenant]) for o in recent)
        propagation = wait_until(serving_new, limit_s=30)
        time.sleep(2.0)
    return _row("publish_promote_rollback", target, load,
                None if propagation is None else propagation,
                f"{len(movers)} tenants: publish, rollback, promote; recovery = until every "
                "answer carries the promoted version")


def _new_artifacts(root: str, since: float) -> bool:
    for dirpath, _dirs, files in os.walk(Path(root) / "artifacts"):
        if "model.ubj" in files and os.stat(Path(dirpath) / "model.ubj").st_mtime > since:
            return True
    return False


def disk_full(target: Target, data_dir: str, mount: str, when: str) -> Row:
    """``tenantry train`` while the registry's disk (a tmpfs) is full, then with room.

    ``when="start"``: full before the run starts. ``when="mid-run"``: filled as soon as the
    run's first artifact is written, so the rest of the run (artifacts, then the Delta
    commits of the publish) hits ENOSPC.
    """
    run_id = f"disk-full-{when}-{int(time.time())}"
    # The run publishes into a registry of its own on the same disk as the served one (whose
    # shadow pair log meets the full disk too), so each variant starts from an empty one.
    root = str(Path(mount) / f"publish-{run_id}" / "registry")
    Registry.create(root, num_shards=4)
    env = {**os.environ, "TENANTRY_RAY_ADDRESS": target.ray_address,
           "TENANTRY_TRAIN_N_ESTIMATORS": "5"}
    cmd = [sys.executable, "-m", "engine.cli", "train", "--data", data_dir, "--registry",
           root, "--run-id", run_id, "--json"]
    filler = Path(mount) / "filler"

    def fill() -> None:
        st = os.statvfs(mount)
        with open(filler, "wb") as fh:  # leave a few KiB: the run's writes cannot fit
            fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 16384))

    filled_mid_run = False
    with target.load(target.prefix(f"disk_full_{when}")) as load:
        time.sleep(2.0)
        try:
            if when == "start":
                fill()
            began = time.time()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            if when != "start":
                while proc.poll() is None and not _new_artifacts(root, began):
                    time.sleep(0.005)
                if proc.poll() is None:
                    fill()
                    filled_mid_run = True
            _out, err_text = proc.communicate(timeout=600)
            state = Registry.open(root).publish_state(run_id).value
            visible = len(Registry.open(root).list_tenants())
        finally:
            filler.unlink(missing_ok=True)
        began_rerun = time.monotonic()
        second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=600, check=False)
        elapsed = time.monotonic() - began_rerun
        time.sleep(2.0)
    published = json.loads(second.stdout).get("published") if second.returncode == 0 else None
    err_text = re.sub(r"\x1b\[[0-9;]*m|\u21b3", "", err_text)  # deltalake's colours, arrows
    errors = [line for line in err_text.splitlines() if line.startswith("tenantry: error:")]
    if "Traceback (most recent call last)" in err_text:
        tail = err_text[err_text.rindex("Traceback"):].strip().splitlines()
        last = next((i for i in range(len(tail) - 1, -1, -1) if not tail[i].startswith(" ")), -1)
        said = "a traceback: " + " ".join(" ".join(tail[last:]).split())[:200]
    elif len(errors) == 1:  # deltalake's messages run over several lines: keep them all
        message = err_text[err_text.index(errors[0]):]
        said = "one error: " + " ".join(message.split())[:240]
    else:
        said = f"{len(errors)} error lines: {err_text.strip()[-160:]}"
    if when != "start" and not filled_mid_run:
        said += " (the run ended before the disk could be filled)"
    note = (f"disk full at {when}: exit {proc.returncode}, {said}; re-run with room: exit "
            f"{second.returncode}, published {published}; recovery = the re-run's time")
    row = _row(f"disk_full_{when.replace('-', '_')}", target, load, elapsed, note)
    row.data_lost = (f"failed run: publish state {state}, {visible} tenants visible; "
                     + row.data_lost)
    return row


# -- the campaign -----------------------------------------------------------------------
def _table(rows: list[Row]) -> str:
    head = "| scenario | requests | failed | recovery (s) | data lost |"
    lines = [head, "|---|---|---|---|---|"]
    for r in rows:
        rec = "-" if r.recovery_s is None else f"{r.recovery_s:g}"
        lines.append(f"| {r.scenario} | {r.requests} | {r.failed} | {rec} | {r.data_lost} |")
    return "\n".join(lines)


def _setup_registry(root: str, tenants: list[str]) -> None:
    reg = Registry.create(root, num_shards=4)
    publish(reg, {t: _train(i) for i, t in enumerate(tenants)}, "faults-seed")
    publish(reg, {SHADOWED: _train(99, rounds=10)}, "faults-candidate", alias="shadow")
    ConfigStore(ShadowTables.for_registry(reg)).set(build_config(SHADOWED, 1.0))


def _scenarios(target: Target, only: set[str]) -> list[Row]:
    """The in-app scenarios (those in ``only``, or all), each printed as it ends."""
    rows: list[Row] = []
    for scenario in (kill_host, kill_ingress, kill_shadow_worker, kill_directory,
                     registry_unreadable, publish_promote_rollback):
        if only and scenario.__name__ not in only:
            continue
        try:
            rows.append(scenario(target))
        except Exception as exc:  # noqa: BLE001 - one broken scenario: say so, go on
            rows.append(Row(scenario.__name__, 0, 0, None, "-",
                            f"scenario error: {type(exc).__name__}: {exc}"[:300]))
        print(_table(rows[-1:]).splitlines()[-1], flush=True)
        wait_until(target.whole)
    return rows


def _disk_full_rows(target: Target, work: Path, mount: Path, root: str) -> list[Row]:
    """disk_full_start and disk_full_mid_run over a generated feature table."""
    data = str(work / "features")
    gen = subprocess.run([sys.executable, "-m", "engine.cli", "data", "generate",
                          "--out", data, "--tenants", "6", "--days", "2", "--seed", "5",
                          "--shards", "4", "--mean-rows", "800", "--registry", root],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    if gen.returncode != 0:
        print(f"disk_full skipped: data generate failed: {gen.stderr[-300:]}")
        return []
    rows = []
    for when in ("start", "mid-run"):
        rows.append(disk_full(target, data, str(mount), when))
        print(_table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run every scenario once; print and write the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenants", type=int, default=24)
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second")
    ap.add_argument("--phase", type=float, default=10.0,
                    help="seconds of load after each recovery")
    ap.add_argument("--outage", type=float, default=30.0,
                    help="seconds the registry stays unreadable")
    ap.add_argument("--only", default="",
                    help="comma-separated scenarios to run (default: all); e.g. kill_host,disk_full")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/faults.json"))
    args = ap.parse_args(argv)

    import ray

    from engine.serving.directory import NAMESPACE
    from engine.serving.launch import start_serving
    from engine.settings import ServeSettings
    from training.cluster import ensure_ray

    work = Path(tempfile.mkdtemp(prefix="tenantry-faults-"))
    mount = work / "disk"
    mount.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
        capture_output=True, check=False).returncode == 0
    tenants = [SHADOWED] + [f"fault-{i:02d}" for i in range(args.tenants - 1)]
    root = str(mount / "registry")
    rows: list[Row] = []
    handle = None
    try:
        _setup_registry(root, tenants)
        ensure_ray(namespace=NAMESPACE)
        settings = ServeSettings(registry=root, port=_free_port(), replicas=2, cache_mb=8.0,
                                 shadow_flush_s=2.0)
        handle = start_serving(settings, app_name="faults")
        target = Target(handle.url, "faults", root, tenants, 2, settings.shadow_flush_s,
                        args.rate, args.phase, args.outage,
                        ray.get_runtime_context().gcs_address)
        wait_until(lambda: "pid" in target.shadow_stats().get("worker", {})
                   or _poke(target), limit_s=120, every=1.0)
        only = {n.strip() for n in args.only.split(",") if n.strip()}
        rows += _scenarios(target, only)
        if only and "disk_full" not in only:
            pass
        elif mounted:
            rows += _disk_full_rows(target, work, mount, root)
        else:
            print("disk_full skipped: needs root to mount a tmpfs")
    finally:
        if handle is not None:
            handle.shutdown()
        ray.shutdown()
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    _write(args, rows)
    return 0


def _write(args: argparse.Namespace, rows: list[Row]) -> None:
    """Print the table (and each row's notes) and write it to ``--out``."""
    print(_table(rows))
    for r in rows:
        if r.notes:
            print(f"  {r.scenario}: {r.notes}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "rate_rps": args.rate, "phase_s": args.phase, "outage_s": args.outage,
        "tenants": args.tenants, "replicas": 2, "load_average": _loadavg(),
        "rows": [asdict(r) for r in rows]}, indent=2) + "\n")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _poke(target: Target) -> bool:
    """One predict for the shadowed tenant (the worker reports its pid after a batch)."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{target.url}/v1/tenants/{SHADOWED}/predict", timeout=5,
                   json={"instances": [[0.0] * len(FEATURES)]})
    return False


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
