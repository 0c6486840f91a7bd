"""Download-and-cache: checksums, cache reuse, atomic writes. Only file:// URLs, never the network."""

from __future__ import annotations

import hashlib
import io
import urllib.request
from pathlib import Path

import pytest
from attnrec.data import ChecksumError, DownloadError, cache_root, download, fetch

PAYLOAD = b"user\titem\n" * 1000


@pytest.fixture
def served(tmp_path: Path) -> Path:
    source = tmp_path / "server" / "file.tsv"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    return source


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATTNREC_DATA", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("ATTNREC_DATA")
    assert cache_root() == Path.home() / ".cache" / "attnrec"


def test_published_checksum_download_and_reuse(served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    cache = tmp_path / "cache"
    path = fetch(served.as_uri(), cache, md5=md5)
    assert path == cache / "file.tsv" and path.read_bytes() == PAYLOAD
    assert not (cache / "file.tsv.sha256").exists()  # the published digest is the reference
    served.unlink()  # a second call must not download again

    def offline(*args, **kwargs):
        raise AssertionError("downloaded although a verified copy was cached")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert fetch(served.as_uri(), cache, md5=md5.upper()) == path


def test_mismatch_on_download_names_digests_and_leaves_nothing(served: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    actual = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(ChecksumError, match=f"file.tsv has sha256 {actual}, expected {'f' * 64}.*Nothing was saved"):
        fetch(served.as_uri(), cache, sha256="f" * 64)
    assert list(cache.iterdir()) == []


def test_damaged_cached_file_is_caught_with_the_fix(served: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    path = fetch(served.as_uri(), cache, md5=md5)
    path.write_bytes(PAYLOAD[:-10])
    damaged = hashlib.md5(PAYLOAD[:-10]).hexdigest()
    with pytest.raises(ChecksumError) as error:
        fetch(served.as_uri(), cache, md5=md5)
    message = str(error.value)
    assert str(path) in message and f"md5 is {damaged}, expected {md5}" in message
    assert f"delete {path}" in message and "re-download" in message
    path.unlink()  # the advised fix works
    assert fetch(served.as_uri(), cache, md5=md5).read_bytes() == PAYLOAD


def test_interrupted_download_leaves_no_partial_file(
    served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Dropped(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            if self.tell() >= 4096:
                raise ConnectionResetError("connection lost")
            return super().read(min(size, 1024))

    monkeypatch.setattr(urllib.request, "urlopen", lambda url: Dropped(PAYLOAD))
    cache = tmp_path / "cache"
    with pytest.raises(ConnectionResetError):
        fetch(served.as_uri(), cache)
    assert list(cache.iterdir()) == []  # neither the file, a partial file, nor a recorded digest
    monkeypatch.undo()
    assert fetch(served.as_uri(), cache, md5=hashlib.md5(PAYLOAD).hexdigest()).read_bytes() == PAYLOAD


def test_unpublished_checksum_is_trusted_on_first_use(served: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="no published checksum; recorded its sha256"):
        path = fetch(served.as_uri(), cache)
    record = cache / "file.tsv.sha256"
    assert record.read_text().split()[0] == hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch(served.as_uri(), cache) == path  # verified against the record, no new warning
    path.write_bytes(b"changed")
    with pytest.raises(ChecksumError, match=r"file\.tsv: sha256 is .*delete .*file\.tsv \(and file\.tsv\.sha256"):
        fetch(served.as_uri(), cache)
    assert leftovers(cache) == []


def test_hand_copied_file_gets_its_digest_recorded(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "copied.zip").write_bytes(PAYLOAD)
    path = fetch("https://example.invalid/copied.zip", cache)  # present: no download attempted
    assert path.read_bytes() == PAYLOAD
    assert (cache / "copied.zip.sha256").read_text().split()[0] == download.file_digest(path)


def test_unknown_address_says_what_to_check(tmp_path: Path) -> None:
    missing = (tmp_path / "server" / "Luxury_Beuaty_5.json.gz").as_uri()
    with pytest.raises(DownloadError, match=r"cannot download .*Luxury_Beuaty_5\.json\.gz .*category.*path="):
        fetch(missing, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
