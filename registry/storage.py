"""Artifact storage over a local path or an object store (``s3://``), via pyarrow.fs.

Paths given to :class:`ArtifactStore` are relative to the registry root and always use
``/``. Exclusive creates (how a version number is claimed) are real on both: ``O_EXCL``
on local disk, a conditional ``PutObject`` (``If-None-Match: *``, through boto3) on S3.
An object store without conditional puts is refused rather than silently raced.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from registry.errors import RegistryError

__all__ = ["ArtifactStore", "FileEntry", "is_remote", "storage_options_from_env"]

# Source variable -> storage option, in increasing precedence (later entries win).
_AWS_ENV = (
    ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
    ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ("AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
    ("AWS_DEFAULT_REGION", "AWS_REGION"),
    ("AWS_REGION", "AWS_REGION"),
    ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
    ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    ("AWS_ALLOW_HTTP", "AWS_ALLOW_HTTP"),
)
_CONDITIONAL_RETRIES = 8


def is_remote(root: str) -> bool:
    """True when ``root`` is an object-store URI rather than a local path."""
    return "://" in root and not root.startswith("file://")


def storage_options_from_env(root: str, env: Mapping[str, str]) -> dict[str, str]:
    """Delta/object-store options for ``root`` from the usual AWS environment variables.

    Args:
        root: the registry root; only ``s3://`` roots get options.
        env: the environment (or any mapping) to read ``AWS_*`` variables from.

    Returns:
        Options understood by deltalake (object_store) and by :class:`ArtifactStore`.
        Missing credentials are left out, so each client falls back to its default chain
        (instance profile, ``~/.aws``).
    """
    if not root.startswith("s3://"):
        return {}
    opts: dict[str, str] = {}
    for src, dst in _AWS_ENV:
        if env.get(src):
            opts[dst] = env[src]
    if opts.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        opts["AWS_ALLOW_HTTP"] = "true"
    # Delta commits on S3 are put-if-absent (S3 conditional writes, no DynamoDB lock);
    # say so explicitly rather than rely on deltalake's default.
    opts.setdefault("conditional_put", "etag")
    return opts


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file below the root: relative path, size and modification time (epoch s)."""

    path: str
    size: int
    mtime: float


@dataclass
class ArtifactStore:
    """Reads and writes artifact files below a registry root."""

    root: str
    storage_options: Mapping[str, str] = field(default_factory=dict)
    _fs: Any = field(default=None, init=False, repr=False, compare=False)
    _base: str = field(default="", init=False, repr=False, compare=False)
    _s3: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._connect()

    def _connect(self) -> None:
        self._s3 = None  # boto3 client, made on first conditional put
        if is_remote(self.root):
            if not self.root.startswith("s3://"):
                raise RegistryError(f"unsupported registry URI scheme: {self.root}")
            opts = self.storage_options
            endpoint = opts.get("AWS_ENDPOINT_URL")
            scheme, _, host = (endpoint or "").partition("://")
            self._fs = pafs.S3FileSystem(
                access_key=opts.get("AWS_ACCESS_KEY_ID"),
                secret_key=opts.get("AWS_SECRET_ACCESS_KEY"),
                session_token=opts.get("AWS_SESSION_TOKEN"),
                # A custom endpoint (MinIO, moto) has no region to discover.
                region=opts.get("AWS_REGION") or ("us-east-1" if endpoint else None),
                endpoint_override=host or None,
                scheme=scheme or "https",
                allow_bucket_creation=False,
            )
            self._base = self.root[len("s3://"):].rstrip("/")
        else:
            self._fs = pafs.LocalFileSystem()
            self._base = os.path.abspath(self.root.removeprefix("file://"))

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "storage_options": dict(self.storage_options)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root = state["root"]
        self.storage_options = state["storage_options"]
        self._connect()

    @property
    def local(self) -> bool:
        """True for a local-disk root."""
        return isinstance(self._fs, pafs.LocalFileSystem)

    def full(self, rel: str) -> str:
        """Absolute path (or bucket/key) of ``rel``."""
        return posixpath.join(self._base, rel) if rel else self._base

    def uri(self, rel: str) -> str:
        """The URI users see for ``rel`` (``s3://…`` or an absolute local path)."""
        return ("s3://" + self.full(rel)) if not self.local else self.full(rel)

    def rel_of_uri(self, uri: str) -> str:
        """Inverse of :meth:`uri`."""
        full = uri.removeprefix("s3://")
        return posixpath.relpath(full, self._base)

    def relative(self, uri: str) -> str | None:
        """``uri`` as a path below this root, or None when it lies outside the root.

        Args:
            uri: a path relative to the root (how the index records artifacts), or an
                absolute local path / ``s3://`` URI (rows written by older versions).

        Returns:
            The normalised relative path, or None for anything outside the root (another
            registry's files, ``..`` escapes, another scheme).
        """
        if is_remote(uri):
            if self.local or not uri.startswith("s3://"):
                return None
            rel = posixpath.relpath(posixpath.normpath(uri[len("s3://"):]), self._base)
        elif uri.startswith(("/", "file://")):
            if not self.local:
                return None
            rel = posixpath.relpath(posixpath.normpath(uri.removeprefix("file://")), self._base)
        else:
            rel = posixpath.normpath(uri)
        if rel in (".", "..") or rel.startswith("../") or posixpath.isabs(rel):
            return None
        return rel

    def write(self, rel: str, data: bytes) -> None:
        """Write ``data`` at ``rel`` (replacing it), atomically on local disk."""
        path = self.full(rel)
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            # Unique per call: two threads of one process may write the same file.
            tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            return
        with self._fs.open_output_stream(path) as out:
            out.write(data)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` only if it does not exist; True if this call created it."""
        path = self.full(rel)
        if self.local:
            # Written to a temporary name first, then hard-linked into place (the link fails
            # if the name exists): a process killed at any point never leaves a torn file.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return True
        return self._s3_put_if_absent(path, data)

    def _s3_client(self) -> Any:
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            opts = self.storage_options
            self._s3 = boto3.client(
                "s3",
                endpoint_url=opts.get("AWS_ENDPOINT_URL") or None,
                aws_access_key_id=opts.get("AWS_ACCESS_KEY_ID") or None,
                aws_secret_access_key=opts.get("AWS_SECRET_ACCESS_KEY") or None,
                aws_session_token=opts.get("AWS_SESSION_TOKEN") or None,
                region_name=opts.get("AWS_REGION") or None,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}),
            )
        return self._s3

    def _s3_put_if_absent(self, path: str, data: bytes) -> bool:
        """``PutObject`` with ``If-None-Match: *``: True if created, False if it existed."""
        from botocore.exceptions import ClientError

        bucket, _, key = path.partition("/")
        for attempt in range(_CONDITIONAL_RETRIES):
            try:
                self._s3_client().put_object(Bucket=bucket, Key=key, Body=data,
                                             IfNoneMatch="*")
                return True
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                code = exc.response.get("Error", {}).get("Code", "")
                if status == 412 or code == "PreconditionFailed":
                    return False
                if status == 409 or code == "ConditionalRequestConflict":
                    # A racing conditional put on the same key: S3 asks us to retry.
                    time.sleep(0.01 * (attempt + 1))
                    continue
                if status == 501 or code == "NotImplemented":
                    raise RegistryError(
                        f"object store at {self.root} does not support conditional puts "
                        "(If-None-Match); concurrent publishers need them") from exc
                raise RegistryError(f"cannot create s3://{path}: {code or exc}") from exc
        raise RegistryError(f"cannot create s3://{path}: conditional put kept conflicting")

    def read(self, rel: str) -> bytes:
        """Bytes of ``rel``; raises FileNotFoundError if absent."""
        path = self.full(rel)
        if self.local:
            with open(path, "rb") as fh:
                return fh.read()
        try:
            with self._fs.open_input_stream(path) as src:
                return bytes(src.read())
        except OSError as exc:
            if not self.exists(rel):
                raise FileNotFoundError(path) from exc
            raise

    def exists(self, rel: str) -> bool:
        """True if a file exists at ``rel``."""
        return self._fs.get_file_info(self.full(rel)).type == pafs.FileType.File

    def list_dir(self, rel: str) -> list[str]:
        """Names directly below ``rel`` (empty if it does not exist)."""
        selector = pafs.FileSelector(self.full(rel), allow_not_found=True, recursive=False)
        return [posixpath.basename(info.path) for info in self._fs.get_file_info(selector)]

    def walk(self, rel: str) -> Iterator[FileEntry]:
        """Every file below ``rel``, recursively."""
        selector = pafs.FileSelector(self.full(rel), allow_not_found=True, recursive=True)
        skip = len(self._base.rstrip("/")) + 1  # entries are full paths below the base
        for info in self._fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                mtime = info.mtime_ns / 1e9 if info.mtime_ns is not None else 0.0
                yield FileEntry(info.path[skip:], info.size or 0, mtime)

    def dirs_at(self, rel: str, depth: int) -> Iterator[str]:
        """Directories exactly ``depth`` levels below ``rel``, as relative paths, without
        reading what is in them: a local root lists directory entries (no ``stat`` of the
        files); an object store has no directories, so its keys are listed."""
        if self.local:
            yield from _local_dirs(self.full(rel), rel.rstrip("/"), depth)
            return
        base = len(rel.strip("/").split("/"))
        seen: set[str] = set()
        for entry in self.walk(rel):
            parts = entry.path.split("/")
            if len(parts) > base + depth:
                found = "/".join(parts[:base + depth])
                if found not in seen:
                    seen.add(found)
                    yield found

    def delete(self, rel: str) -> None:
        """Remove the file ``rel``; missing is fine."""
        try:
            self._fs.delete_file(self.full(rel))
        except FileNotFoundError:
            pass

    def delete_dir(self, rel: str) -> None:
        """Remove ``rel`` and everything below it; missing is fine."""
        try:
            self._fs.delete_dir(self.full(rel))
        except FileNotFoundError:
            pass


def _local_dirs(full: str, rel: str, depth: int) -> Iterator[str]:
    """:meth:`ArtifactStore.dirs_at` on local disk (``os.scandir``: file types from the
    directory entries, no ``stat`` per file)."""
    try:
        with os.scandir(full) as it:
            names = [e.name for e in it if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if depth <= 1:
            yield f"{rel}/{name}"
        else:
            yield from _local_dirs(os.path.join(full, name), f"{rel}/{name}", depth - 1)
