"""One contract, two artifact stores: the local filesystem and S3 (moto on loopback).

Every test runs against both (a parametrised fixture), so the registry above sees the
same behaviour wherever its root lives. No Ray here.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

from registry import RegistrySettings
from registry.storage import ArtifactStore


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "root"))
    bucket: str = request.getfixturevalue("bucket")
    env: dict[str, str] = request.getfixturevalue("s3_env")
    root = f"s3://{bucket}/root"
    return ArtifactStore(root, RegistrySettings.from_env(env).storage_options(root))


def test_write_read_exists_and_replace(store: ArtifactStore) -> None:
    assert not store.exists("a/b/model.ubj")
    store.write("a/b/model.ubj", b"one")
    assert store.exists("a/b/model.ubj") and store.read("a/b/model.ubj") == b"one"
    store.write("a/b/model.ubj", b"two")  # replaces
    assert store.read("a/b/model.ubj") == b"two"
    assert not store.exists("a/b")  # a directory is not a file


def test_reading_a_missing_file_raises_file_not_found(store: ArtifactStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.read("nothing/here.ubj")


def test_create_exclusive_creates_once(store: ArtifactStore) -> None:
    assert store.create_exclusive("claims/v=1", b"first")
    assert not store.create_exclusive("claims/v=1", b"second")
    assert store.read("claims/v=1") == b"first"


def test_concurrent_exclusive_creates_have_one_winner(store: ArtifactStore) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        won = store.create_exclusive("claims/race", f"writer-{i}".encode())
        with lock:
            results.append(won)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [False] * 5 + [True]
    assert store.read("claims/race").startswith(b"writer-")


def test_list_walk_and_delete(store: ArtifactStore) -> None:
    for rel, data in (("t/a/v=1/model.ubj", b"1"), ("t/a/v=2/model.ubj", b"22"),
                      ("t/b/v=1/model.ubj", b"333")):
        store.write(rel, data)
    assert sorted(store.list_dir("t")) == ["a", "b"]
    assert store.list_dir("missing") == []
    walked = {e.path: e.size for e in store.walk("t")}
    assert walked == {"t/a/v=1/model.ubj": 1, "t/a/v=2/model.ubj": 2, "t/b/v=1/model.ubj": 3}
    assert list(store.walk("missing")) == []
    assert sorted(store.dirs_at("t", 2)) == ["t/a/v=1", "t/a/v=2", "t/b/v=1"]
    assert sorted(store.dirs_at("t", 1)) == ["t/a", "t/b"]
    assert list(store.dirs_at("missing", 2)) == []
    store.delete("t/a/v=1/model.ubj")
    store.delete("t/a/v=1/model.ubj")  # missing is fine
    assert not store.exists("t/a/v=1/model.ubj")
    store.delete_dir("t/a")
    store.delete_dir("t/a")
    assert {e.path for e in store.walk("t")} == {"t/b/v=1/model.ubj"}


def test_uris_and_relative_paths_round_trip(store: ArtifactStore) -> None:
    uri = store.uri("t/a/v=1/model.ubj")
    assert uri.startswith("s3://" if not store.local else "/")
    assert store.rel_of_uri(uri) == "t/a/v=1/model.ubj"
    assert store.relative(uri) == "t/a/v=1/model.ubj"
    assert store.relative("t/a/../a/v=1/model.ubj") == "t/a/v=1/model.ubj"
    for outside in ("../elsewhere", "/etc/passwd", "s3://other-bucket/x", "t/../.."):
        assert store.relative(outside) is None, outside


def test_a_store_travels_by_pickle(store: ArtifactStore) -> None:
    store.write("p/model.ubj", b"payload")
    clone: Any = pickle.loads(pickle.dumps(store))
    assert clone.root == store.root and clone.local == store.local
    assert clone.read("p/model.ubj") == b"payload"
