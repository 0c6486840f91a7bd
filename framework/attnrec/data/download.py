"""Download-and-cache for public data sets, safe under concurrent, stalled and interrupted downloads.

Files land in ``$ATTNREC_DATA`` (or ``~/.cache/attnrec``). pooch does the HTTP(S) transfer: a
timeout on the connection and on every read, so a server that accepts and never answers fails
instead of hanging, retries with a growing pause, and a progress bar on stderr. The bytes land
in a temporary file in the destination folder, are checked, and only then moved into place with
``os.replace`` (atomic on POSIX and Windows), so two DDP processes fetching at once, or a
download killed half-way, never leave a truncated file under the final name; the temporary file
is removed whatever happens. ``file://`` addresses (a mirror on a local or network disk) are
copied the same way.

Integrity: where the publisher gives a digest (GroupLens's ``.md5`` files for MovieLens) the
file is checked against it on download and on every reuse. Where none is published (the
McAuley lab's Amazon files) the SHA-256 of the first download is recorded next to the file
(``<name>.sha256``, trust on first use) with a warning, and later uses are checked against it,
so a file that changes or is corrupted on disk afterwards is caught. The digests are checked
here rather than by pooch, which would silently download again over a damaged cached file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import uuid
import warnings
from pathlib import Path

import pooch
import requests

CHUNK = 1 << 20
TIMEOUT = 30.0
"""Seconds a download may wait to connect, and for each block of data."""
RETRIES = 2
"""Further attempts after a failed download (pooch pauses 1 s, 2 s, ... in between)."""


class ChecksumError(RuntimeError):
    """A cached or downloaded file's digest differs from the expected one."""


class DownloadError(OSError):
    """A file could not be fetched (unknown address, no network, no answer in time)."""


def cache_root() -> Path:
    """Where downloads are kept: ``$ATTNREC_DATA`` if set, else ``~/.cache/attnrec``."""
    env = os.environ.get("ATTNREC_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "attnrec"


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    url: str,
    folder: str | os.PathLike | None = None,
    filename: str | None = None,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = TIMEOUT,
    retries: int = RETRIES,
) -> Path:
    """The local path of ``url``'s file, downloading it into ``folder`` (default: the cache
    root) unless a verified copy is already there.

    Give ``md5`` or ``sha256`` when the publisher states one; otherwise the first download's
    SHA-256 is recorded and enforced from then on (see the module docstring). A download that
    gets no answer for ``timeout`` seconds fails and is tried ``retries`` more times.
    """
    folder = Path(folder) if folder is not None else cache_root()
    target = folder / (filename or url.rstrip("/").rsplit("/", 1)[-1])
    expected = _expected(target, md5, sha256)
    if target.exists():
        _verify(target, url, *expected)
        return target
    folder.mkdir(parents=True, exist_ok=True)
    algorithm = expected[0] or "sha256"
    partial = folder / f".{target.name}.{uuid.uuid4().hex[:12]}.part"
    try:
        _download(url, partial, timeout, retries)
        actual = file_digest(partial, algorithm)
        if expected[1] is not None and actual != expected[1]:
            raise ChecksumError(
                f"downloaded {url} has {algorithm} {actual}, expected {expected[1]}; the server sent a different or "
                "damaged file. Nothing was saved; retry later, or download it yourself and pass its path (path=...)."
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    if expected[1] is None:
        _write_atomic(_record(target), f"{actual}  {target.name}\n")
        warnings.warn(
            f"{url} has no published checksum; recorded its sha256 {actual} in {_record(target)} and will check "
            "the cached copy against it from now on (trust on first use)",
            stacklevel=2,
        )
    return target


def _download(url: str, destination: Path, timeout: float, retries: int) -> None:
    """``url``'s bytes into ``destination`` (which does not exist yet): pooch for HTTP(S), which
    writes its own temporary file and moves it there when complete, a copy for ``file://``."""
    advice = (
        "check the name in the address (data set, category, variant) and the network, or download the file yourself "
        "and pass its path (path=...)"
    )
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        try:
            shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(url).path), destination)
        except OSError as exc:
            raise DownloadError(f"cannot download {url} ({exc.strerror}); {advice}") from exc
        return
    if scheme not in ("http", "https"):
        raise DownloadError(f"cannot download {url}: the address must start with https://, http:// or file://")
    getter = pooch.create(
        path=destination.parent, base_url="", registry={destination.name: None}, urls={destination.name: url},
        retry_if_failed=retries,
    )  # fmt: skip
    try:
        getter.fetch(destination.name, downloader=pooch.HTTPDownloader(progressbar=True, timeout=timeout))
    except requests.exceptions.Timeout as exc:
        raise DownloadError(
            f"cannot download {url}: no answer within {timeout:g} s ({retries + 1} attempts); the server is down or "
            "the network is blocked. Retry later, or download the file yourself and pass its path (path=...)"
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise DownloadError(f"cannot download {url} ({exc}); {advice}") from exc


def _record(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _expected(target: Path, md5: str | None, sha256: str | None) -> tuple[str | None, str | None]:
    if sha256:
        return "sha256", sha256.lower()
    if md5:
        return "md5", md5.lower()
    record = _record(target)
    if record.exists() and target.exists():
        return "sha256", record.read_text().split()[0].lower()
    return None, None


def _verify(target: Path, url: str, algorithm: str | None, expected: str | None) -> None:
    if expected is None:
        # cached before any digest was recorded (e.g. copied in by hand): record it now
        _write_atomic(_record(target), f"{file_digest(target)}  {target.name}\n")
        return
    actual = file_digest(target, algorithm or "sha256")
    if actual != expected:
        raise ChecksumError(
            f"{target}: {algorithm} is {actual}, expected {expected} (source {url}). The file is damaged or is not "
            f"the published one; delete {target} (and {_record(target).name} if present) and run again to re-download."
        )


def _write_atomic(path: Path, text: str) -> None:
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False)
    with handle:
        handle.write(text)
    os.replace(handle.name, path)
