"""Where call records and recordings are kept: a small interface and its two backends. Not pure: file and network
I/O, always off the media path (after a call, or in the read API).

- :class:`FileStorage` (``file:///abs/dir``, and the default: ``<storage.data_dir>/calls``): one directory; a
  recording is written straight into it while the call goes on, so a killed process leaves it readable there.
- :class:`S3Storage` (``s3://bucket/prefix``): any S3-compatible object store, through obstore (a small async
  client in Rust, with presigned URLs built in and no botocore/aiohttp pin of its own). Credentials and the endpoint
  come from the environment as every AWS tool reads them (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` for a non-AWS store). A recording is written to a
  spool file under ``storage.data_dir`` during the call and uploaded when it ends; any replica reads it back.

Keys: ``<call_sid>.json`` (the record) and ``<call_sid>.wav`` (the recording), under the prefix. A failure raises
:class:`StorageUnavailable`; callers log and count it, and retry what they can.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from ..errors import GatewayError

__all__ = ["FileStorage", "S3Storage", "Storage", "StorageUnavailable", "StoredObject", "open_storage", "safe_id"]

_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


class StorageUnavailable(GatewayError):
    """The record storage failed (full, unreachable, refused): the call is unaffected; logged, counted, retried."""


def safe_id(call_sid: str) -> bool:
    """Whether ``call_sid`` can name an object (letters, digits, ``_.-``; no path tricks)."""
    return bool(_SAFE.match(call_sid)) and ".." not in call_sid


@dataclass(frozen=True)
class StoredObject:
    key: str
    modified: float  # seconds since the epoch
    size: int


class Storage(Protocol):
    url: str

    def local_path(self, key: str) -> Path | None:
        """Where a file written during the call should go: the final place (files) or None (write a spool file)."""

    def location(self, key: str) -> str:
        """A human-readable location (a path, or s3://bucket/key)."""

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def put_file(self, key: str, path: Path, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    def stream(self, key: str) -> AsyncIterator[bytes]: ...

    async def list(self) -> list[StoredObject]: ...

    async def delete(self, key: str) -> None: ...

    async def presign(self, key: str, expires_s: int) -> str | None:
        """A URL anyone holding it can GET ``key`` from, or None (served by the gateway's own route)."""


class FileStorage:
    """A directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def local_path(self, key: str) -> Path:
        return self.root / key

    def location(self, key: str) -> str:
        return str(self.root / key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._run(_write_atomic, self.root / key, data)

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        if path != self.root / key:
            await self._run(os.replace, path, self.root / key)

    async def get(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread((self.root / key).read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageUnavailable(f"{self.root / key}: {exc.strerror or exc}") from exc

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        data = await self.get(key)
        if data is not None:
            yield data

    async def list(self) -> list[StoredObject]:
        found: list[StoredObject] = await self._run(_scan, self.root)  # type: ignore[assignment]
        return found

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread((self.root / key).unlink, True)
        except OSError as exc:
            raise StorageUnavailable(f"{self.root / key}: {exc.strerror or exc}") from exc

    async def presign(self, key: str, expires_s: int) -> str | None:
        return None

    async def _run(self, fn: object, *args: object) -> object:
        try:
            return await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]
        except OSError as exc:
            raise StorageUnavailable(f"{self.root}: {exc.strerror or exc}") from exc


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _scan(root: Path) -> list[StoredObject]:
    if not root.is_dir():
        return []
    out = []
    with os.scandir(root) as it:
        for entry in it:
            if entry.is_file() and not entry.name.endswith(".part"):
                st = entry.stat()
                out.append(StoredObject(entry.name, st.st_mtime, st.st_size))
    return out


class S3Storage:
    """An S3-compatible bucket (and prefix), through obstore."""

    def __init__(self, url: str, env: dict[str, str] | None = None) -> None:
        from obstore.store import S3Store

        env = dict(os.environ) if env is None else env
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or ""
        self.url = url
        self._store = S3Store.from_url(
            url,
            client_options={"allow_http": endpoint.startswith("http://"), "timeout": dt.timedelta(seconds=30)},
            retry_config={"max_retries": 2, "retry_timeout": dt.timedelta(seconds=20)},
        )

    def local_path(self, key: str) -> None:
        return None

    def location(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        import obstore

        try:
            await obstore.put_async(self._store, key, data, attributes={"Content-Type": content_type})
        except Exception as exc:  # noqa: BLE001 - obstore raises its own tree; one error type for callers
            raise StorageUnavailable(f"{self.location(key)}: {exc}") from exc

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        import obstore

        try:
            await obstore.put_async(self._store, key, path, attributes={"Content-Type": content_type})
        except Exception as exc:  # noqa: BLE001
            raise StorageUnavailable(f"{self.location(key)}: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:  # noqa: BLE001
            raise StorageUnavailable(f"{self.location(key)}: {exc}") from exc

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            result = await obstore.get_async(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return
        except Exception as exc:  # noqa: BLE001
            raise StorageUnavailable(f"{self.location(key)}: {exc}") from exc
        async for chunk in result.stream(min_chunk_size=256 * 1024):
            yield bytes(chunk)

    async def list(self) -> list[StoredObject]:
        import obstore

        out = []
        try:
            async for batch in obstore.list(self._store, None, chunk_size=1000):
                for meta in batch:
                    out.append(StoredObject(meta["path"], meta["last_modified"].timestamp(), meta["size"]))
        except Exception as exc:  # noqa: BLE001
            raise StorageUnavailable(f"{self.url}: {exc}") from exc
        return out

    async def delete(self, key: str) -> None:
        import obstore

        try:
            await obstore.delete_async(self._store, key)
        except Exception as exc:  # noqa: BLE001
            raise StorageUnavailable(f"{self.location(key)}: {exc}") from exc

    async def presign(self, key: str, expires_s: int) -> str | None:
        import obstore

        try:
            return await obstore.sign_async(self._store, "GET", key, dt.timedelta(seconds=expires_s))
        except Exception as exc:  # noqa: BLE001
            raise StorageUnavailable(f"{self.location(key)}: {exc}") from exc


def open_storage(url: str, env: dict[str, str] | None = None) -> Storage:
    """The backend for a checked ``storage.url`` (gateway.records.settings.check_records)."""
    u = urlsplit(url)
    if u.scheme == "s3":
        return S3Storage(url, env)
    return FileStorage(Path(unquote(u.path)))
