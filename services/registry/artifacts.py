"""Immutable, content-addressed store of ONNX artifacts: ``<root>/<sha256>.onnx``.

An artifact is written once (to a temporary file, then renamed into place) and its
digest is checked again on every read, so a corrupted file never reaches Triton.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.registry.errors import ArtifactCorrupted

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size_bytes: int


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not SHA256_HEX.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / f"{sha256}.onnx"

    def put(self, data: bytes) -> StoredArtifact:
        """Store ``data`` under its digest; storing the same bytes twice keeps one file."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest)
        if not (path.exists() and _digest_of(path) == digest):
            self._write(path, data)
        return StoredArtifact(sha256=digest, size_bytes=len(data))

    def read(self, sha256: str) -> bytes:
        """The artifact's bytes, verified against ``sha256``."""
        path = self.path_for(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactCorrupted(f"artifact {sha256} is missing from the artifact store") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactCorrupted(f"artifact {sha256} does not match its sha256")
        return data

    def _write(self, path: Path, data: bytes) -> None:
        fd, temporary = tempfile.mkstemp(dir=self.root, prefix=".incoming-", suffix=".onnx")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o444)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _digest_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
