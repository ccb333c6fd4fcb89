import hashlib
import os

import pytest

from services.registry.artifacts import ArtifactStore
from services.registry.errors import ArtifactCorrupted


def test_put_stores_by_digest_and_read_returns_the_bytes(tmp_path):
    store = ArtifactStore(tmp_path)
    stored = store.put(b"model bytes")
    assert stored.sha256 == hashlib.sha256(b"model bytes").hexdigest()
    assert stored.size_bytes == len(b"model bytes")
    assert (tmp_path / f"{stored.sha256}.onnx").read_bytes() == b"model bytes"
    assert store.read(stored.sha256) == b"model bytes"


def test_the_same_bytes_twice_keep_one_file(tmp_path):
    store = ArtifactStore(tmp_path)
    assert store.put(b"same") == store.put(b"same")
    assert [p.name for p in tmp_path.iterdir()] == [f"{hashlib.sha256(b'same').hexdigest()}.onnx"]


def test_a_corrupted_artifact_is_never_returned(tmp_path):
    store = ArtifactStore(tmp_path)
    stored = store.put(b"original")
    path = store.path_for(stored.sha256)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupted, match="does not match"):
        store.read(stored.sha256)


def test_a_corrupted_artifact_is_repaired_by_storing_it_again(tmp_path):
    store = ArtifactStore(tmp_path)
    stored = store.put(b"original")
    path = store.path_for(stored.sha256)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    store.put(b"original")
    assert store.read(stored.sha256) == b"original"


def test_a_missing_artifact_is_reported(tmp_path):
    with pytest.raises(ArtifactCorrupted, match="missing"):
        ArtifactStore(tmp_path).read("0" * 64)


def test_a_digest_that_is_not_hex_is_refused(tmp_path):
    with pytest.raises(ValueError):
        ArtifactStore(tmp_path).path_for("../../etc/passwd")
