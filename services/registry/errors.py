"""Registry-specific errors, refining the fleet's hierarchy in ``services.common.errors``."""

from __future__ import annotations

from services.common.errors import Conflict, InvalidInput, MlfleetError


class ModelExists(Conflict):
    code, title = "model-exists", "Model already exists"


class InvalidArtifact(InvalidInput):
    code, title = "invalid-artifact", "Artifact is not a usable ONNX model"


class InvalidMetadata(InvalidInput):
    code, title = "invalid-metadata", "Version metadata is invalid"


class ArtifactCorrupted(MlfleetError):
    """A stored artifact is missing or no longer matches its sha256; it is never sent to Triton."""

    status, code, title = 500, "artifact-corrupted", "Stored artifact is missing or corrupted"


class ModelLoadFailed(MlfleetError):
    status, code, title = 502, "model-load-failed", "Triton failed to load the model"
