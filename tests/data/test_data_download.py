"""Download-and-cache: checksums, cache reuse, atomic writes, timeouts and retries. Downloads come
from HTTP servers on 127.0.0.1 started by the tests (and file:// addresses), never the network."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from attnrec.data import ChecksumError, DownloadError, cache_root, download, fetch

PAYLOAD = b"user\titem\n" * 1000


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """``serve(handler) -> base URL``: an HTTP server on 127.0.0.1 in a thread, stopped after the
    test (after releasing the requests that :class:`Silent` holds)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # a proxy in the environment must not see these requests
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    release = threading.Event()
    monkeypatch.setattr(Silent, "release", release)
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handler: type[http.server.BaseHTTPRequestHandler]) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    release.set()
    for server in servers:
        server.shutdown()
        server.server_close()


class Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class Files(Quiet):
    """Serves ``PAYLOAD`` as /file.tsv; anything else is 404."""

    def do_GET(self) -> None:
        if self.path != "/file.tsv":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)


class Silent(Quiet):
    """Accepts the request and never answers (until the test ends)."""

    release = threading.Event()

    def do_GET(self) -> None:
        self.release.wait(30)


class DropsFirst(Files):
    """The first request gets half the promised bytes, then the connection closes."""

    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        if type(self).requests > 1:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
        self.wfile.flush()
        self.close_connection = True


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".", "tmp")))


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATTNREC_DATA", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("ATTNREC_DATA")
    assert cache_root() == Path.home() / ".cache" / "attnrec"


def test_published_checksum_download_and_reuse(serve, tmp_path: Path) -> None:
    url = serve(Files) + "/file.tsv"
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    cache = tmp_path / "cache"
    path = fetch(url, cache, md5=md5)
    assert path == cache / "file.tsv" and path.read_bytes() == PAYLOAD
    assert not (cache / "file.tsv.sha256").exists()  # the published digest is the reference
    missing = url.replace("file.tsv", "gone.tsv")  # a second call must not download again: this address is 404
    assert fetch(missing, cache, "file.tsv", md5=md5.upper()) == path


def test_mismatch_on_download_names_digests_and_leaves_nothing(serve, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    actual = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(ChecksumError, match=f"file.tsv has sha256 {actual}, expected {'f' * 64}.*Nothing was saved"):
        fetch(serve(Files) + "/file.tsv", cache, sha256="f" * 64)
    assert list(cache.iterdir()) == []


def test_damaged_cached_file_is_caught_with_the_fix(serve, tmp_path: Path) -> None:
    url = serve(Files) + "/file.tsv"
    cache = tmp_path / "cache"
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    path = fetch(url, cache, md5=md5)
    path.write_bytes(PAYLOAD[:-10])
    damaged = hashlib.md5(PAYLOAD[:-10]).hexdigest()
    with pytest.raises(ChecksumError) as error:
        fetch(url, cache, md5=md5)
    message = str(error.value)
    assert str(path) in message and f"md5 is {damaged}, expected {md5}" in message
    assert f"delete {path}" in message and "re-download" in message
    path.unlink()  # the advised fix works
    assert fetch(url, cache, md5=md5).read_bytes() == PAYLOAD


def test_a_server_that_never_answers_times_out_and_leaves_nothing(serve, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    started = time.monotonic()
    expected = r"cannot download http://127\.0\.0\.1:\d+/file\.tsv: no answer within 0\.3 s \(2 attempts\).*path="
    with pytest.raises(DownloadError, match=expected):
        fetch(serve(Silent) + "/file.tsv", cache, timeout=0.3, retries=1)
    assert time.monotonic() - started < 10
    assert list(cache.iterdir()) == []


def test_a_dropped_connection_is_retried_and_an_interrupted_download_leaves_nothing(serve, tmp_path: Path) -> None:
    DropsFirst.requests = 0
    url = serve(DropsFirst) + "/file.tsv"
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"cannot download .*file\.tsv \(.*\); check .*path="):
        fetch(url, cache, retries=0)
    assert list(cache.iterdir()) == []  # neither the file, a partial file, nor a recorded digest
    DropsFirst.requests = 0
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    assert fetch(url, cache, md5=md5, retries=1).read_bytes() == PAYLOAD and DropsFirst.requests == 2
    assert leftovers(cache) == []


def test_unpublished_checksum_is_trusted_on_first_use(serve, tmp_path: Path) -> None:
    url = serve(Files) + "/file.tsv"
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="no published checksum; recorded its sha256"):
        path = fetch(url, cache)
    record = cache / "file.tsv.sha256"
    assert record.read_text().split()[0] == hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch(url, cache) == path  # verified against the record, no new warning
    path.write_bytes(b"changed")
    with pytest.raises(ChecksumError, match=r"file\.tsv: sha256 is .*delete .*file\.tsv \(and file\.tsv\.sha256"):
        fetch(url, cache)
    assert leftovers(cache) == []


def test_hand_copied_file_gets_its_digest_recorded(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "copied.zip").write_bytes(PAYLOAD)
    path = fetch("https://example.invalid/copied.zip", cache)  # present: no download attempted
    assert path.read_bytes() == PAYLOAD
    assert (cache / "copied.zip.sha256").read_text().split()[0] == download.file_digest(path)


def test_unknown_address_says_what_to_check(serve, tmp_path: Path) -> None:
    for url in (serve(Files) + "/Luxury_Beuaty_5.json.gz", (tmp_path / "server" / "Luxury_Beuaty_5.json.gz").as_uri()):
        with pytest.raises(DownloadError, match=r"cannot download .*Luxury_Beuaty_5\.json\.gz .*category.*path="):
            fetch(url, tmp_path / "cache", retries=0)
        assert list((tmp_path / "cache").iterdir()) == []


def test_a_local_mirror_is_copied_with_the_same_checks(tmp_path: Path) -> None:
    source = tmp_path / "mirror" / "file.tsv"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    cache = tmp_path / "cache"
    assert fetch(source.as_uri(), cache, md5=hashlib.md5(PAYLOAD).hexdigest()).read_bytes() == PAYLOAD
    with pytest.raises(ChecksumError, match="Nothing was saved"):
        fetch(source.as_uri(), cache, "other.tsv", md5="0" * 32)
    assert sorted(p.name for p in cache.iterdir()) == ["file.tsv"]
