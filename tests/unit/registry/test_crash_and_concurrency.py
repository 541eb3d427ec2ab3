"""Two writers at once, and a writer killed between staging and committing."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from registry import Registry
from registry.gc import collect_garbage

WRITER = textwrap.dedent("""
    import sys, time, numpy as np, xgboost as xgb
    sys.path.append({repo!r})
    from tests.unit.registry.conftest import new_version, train_tiny
    from registry import AliasMove, Registry
    reg = Registry.open({root!r})
    data = train_tiny()
    name, runs, start_at, die = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    while time.time() < start_at:
        time.sleep(0.005)
    for r in range(runs):
        run_id = f"{{name}}-{{r}}"
        staged = [reg.stage_artifact(t, data, run_id) for t in ("shared-1", "shared-2", name)]
        if die == "die":
            import os, signal
            os.kill(os.getpid(), signal.SIGKILL)
        reg.publish(run_id, [new_version(s) for s in staged],
                    [AliasMove(s.tenant_id, "production", s.version) for s in staged])
""")


def _script(tmp_path: Path, reg: Registry) -> Path:
    (tmp_path / "bin").mkdir(exist_ok=True)
    path = tmp_path / "bin" / "writer.py"  # not beside the registry dir (import shadowing)
    path.write_text(WRITER.format(repo=str(Path(__file__).parents[3]), root=reg.root))
    return path


def test_two_processes_publishing_at_once_lose_nothing(tmp_path: Path, reg: Registry) -> None:
    script = _script(tmp_path, reg)
    start_at = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, str(script), name, "6", str(start_at), "live"])
             for name in ("w1", "w2")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    snap = reg.new_snapshot()
    for tenant in ("shared-1", "shared-2"):
        versions = [m.version for m in snap.versions(tenant)]
        assert sorted(versions) == list(range(1, 13)), versions  # 2 writers x 6 runs, unique
        runs = {m.run_id for m in snap.versions(tenant)}
        assert runs == {f"w{w}-{r}" for w in (1, 2) for r in range(6)}
    assert len(snap.versions("w1")) == len(snap.versions("w2")) == 6
    for run in ("w1-5", "w2-5"):
        assert reg.is_published(run)


def test_killed_writer_leaves_no_visible_state(tmp_path: Path, reg: Registry) -> None:
    script = _script(tmp_path, reg)
    proc = subprocess.run([sys.executable, str(script), "crash", "1", "0", "die"], check=False, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    claims = list(Path(reg.root, "artifacts").rglob("model.ubj"))
    assert len(claims) == 3  # artifacts were written ...
    snap = reg.new_snapshot()
    assert snap.tenants() == []  # ... but nothing is visible
    assert not reg.is_published("crash-0")
    # Re-running the same run id publishes exactly once, reusing the claimed versions.
    proc = subprocess.run([sys.executable, str(script), "crash", "1", "0", "live"], check=False,
                          timeout=120)
    assert proc.returncode == 0
    snap.refresh()
    assert {t: [m.version for m in snap.versions(t)] for t in snap.tenants()} == \
        {"crash": [1], "shared-1": [1], "shared-2": [1]}
    proc = subprocess.run([sys.executable, str(script), "crash", "1", "0", "live"], check=False,
                          timeout=120)
    snap.refresh()
    assert [m.version for m in snap.versions("crash")] == [1]


def test_gc_collects_what_a_killed_writer_left(tmp_path: Path, reg: Registry) -> None:
    script = _script(tmp_path, reg)
    subprocess.run([sys.executable, str(script), "crash", "1", "0", "die"], check=False, timeout=120)
    assert len(list(Path(reg.root, "artifacts").rglob("model.ubj"))) == 3
    kept = collect_garbage(reg, keep=1, orphan_grace_s=3600)
    assert kept.orphans_removed == 0  # too young: could be a publish in progress
    report = collect_garbage(reg, keep=1, orphan_grace_s=0)
    assert report.orphans_removed == 3 and report.bytes_freed > 0
    assert list(Path(reg.root, "artifacts").rglob("model.ubj")) == []


def test_claims_are_never_torn_and_a_bare_version_dir_is_reused(tmp_path: Path,
                                                                 reg: Registry) -> None:
    data = (Path(__file__).parent / "conftest.py").read_bytes()  # any bytes will do
    store = reg.store
    assert store.create_exclusive("claims/x.json", b'{"run_id": "a"}')
    assert not store.create_exclusive("claims/x.json", b'{"run_id": "b"}')
    assert store.read("claims/x.json") == b'{"run_id": "a"}'  # the loser changed nothing
    assert sorted(p.name for p in Path(store.full("claims")).iterdir()) == ["x.json"]
    # A claimer killed after creating v=1 but before its claim landed: the next run (or a
    # retry of the same run) claims v=1 rather than skipping to v=2.
    tdir = Path(reg.root) / "artifacts" / f"shard={reg.shard_of('acme'):02d}" / "tenant=acme"
    (tdir / "v=1").mkdir(parents=True)
    assert reg.stage_artifact("acme", data, "run-1").version == 1
    assert reg.stage_artifact("acme", data, "run-1").version == 1  # the retry reuses it
    assert reg.stage_artifact("acme", data, "run-2").version == 2


def test_a_full_disk_at_an_index_commit_is_one_registry_error(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import errno

    import pyarrow as pa
    import pytest

    from registry import Registry
    from registry import index as index_module
    from registry.errors import RegistryError

    reg = Registry.create(str(tmp_path / "reg"), num_shards=2)

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("registry.delta.write_deltalake", full)  # DeltaIndex.append's writer
    with pytest.raises(RegistryError, match="No space left"):
        reg.index.append("runs", pa.Table.from_pylist([], schema=index_module.TABLES["runs"]),
                         "full-run")
