"""Turn a trained model and its data into a registry upload: ONNX, signature, profile, metrics, lineage.

Pure work, no HTTP: :meth:`Fleet.register <mlfleet.client.sync.Fleet.register>` fetches the
feature views, calls :func:`package_version` and uploads what it returns. Scores, reference
profile and metrics are computed by running the ONNX file itself with onnxruntime, so they
describe exactly what Triton will serve, whether the caller passed an estimator or a file.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlfleet.client.errors import PackagingError
from mlfleet.client.models import FeatureViewPublic, Lineage, Signature, SignatureInput, SignatureOutput, VersionCreate
from services.common.profiles import build_reference_profile

Labels = Sequence[Any] | np.ndarray | pd.Series | str
"""Labels row by row, or the name of the frame's label column."""

ONNX_OPSETS = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class VersionUpload:
    artifact: bytes
    metadata: VersionCreate

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.artifact).hexdigest()


def package_version(
    model: Any,
    training_frame: pd.DataFrame | None = None,
    *,
    signature: Signature | Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    lineage: Lineage | Mapping[str, Any] | None = None,
    labels: Labels | None = None,
    holdout: tuple[pd.DataFrame, Labels] | None = None,
    feature_views: Sequence[FeatureViewPublic] = (),
    categorical: Sequence[str] = (),
    description: str = "",
) -> VersionUpload:
    """Everything a version upload needs.

    ``model`` is a fitted scikit-learn estimator (converted with skl2onnx, FP32 input, no
    zipmap), ONNX bytes, an ``onnx.ModelProto`` or the path of an ``.onnx`` file.
    ``training_frame`` holds the model's inputs; without an explicit ``signature`` its columns,
    in order, are the inputs, and a column named like a field of a feature view is read from
    the feature store. Metrics are computed on ``holdout`` (a frame and its labels) when
    given, else on the training frame when ``labels`` are given; explicit ``metrics`` win.
    The reference profile treats ``categorical`` inputs (and boolean or ``category`` columns)
    as categories, the others as numbers.
    """
    frame, train_labels = _split_labels(training_frame, labels)
    is_estimator = _is_estimator(model)
    if signature is not None:
        chosen = Signature.model_validate(signature)
    elif frame is not None:
        classes = [_plain(c) for c in model.classes_] if is_estimator and hasattr(model, "classes_") else None
        chosen = infer_signature(list(frame.columns), feature_views, classes=classes)
    else:
        raise PackagingError("without a training frame, a signature is required")
    x = _matrix(frame, chosen) if frame is not None else None
    if is_estimator:
        if x is None:
            raise PackagingError("converting an estimator to ONNX needs its training frame")
        check_fitted_inputs(model, chosen.input_names)
        artifact = estimator_to_onnx(model, x)
        check_conversion(model, artifact, x, chosen)
    else:
        artifact = _onnx_bytes(model)
    chosen = _with_onnx_outputs(chosen, artifact, explicit=signature is not None)

    computed: dict[str, float] = {}
    profile: dict[str, Any] = {}
    metrics_data = None
    if x is not None:
        probabilities = predict_probabilities(artifact, x, chosen.output)
        scores = probabilities[:, chosen.output.positive_class_index]
        categories = [n for n in chosen.input_names if n in categorical or _is_categorical(frame[n])]
        profile = build_reference_profile({name: x[:, i] for i, name in enumerate(chosen.input_names)}, scores,
                                          categorical=categories)
        if train_labels is not None and holdout is None:
            computed, metrics_data = classification_metrics(probabilities, train_labels, chosen.output), "training"
    if holdout is not None:
        holdout_frame, holdout_labels = _split_labels(*holdout)
        if holdout_labels is None:
            raise PackagingError("holdout needs labels: (frame, labels) or (frame, 'label_column')")
        probabilities = predict_probabilities(artifact, _matrix(holdout_frame, chosen), chosen.output)
        computed, metrics_data = classification_metrics(probabilities, holdout_labels, chosen.output), "holdout"

    inferred = Lineage(
        dataset_hash=dataset_hash(frame, train_labels) if frame is not None else None,
        params={**(estimator_params(model) if is_estimator else {}),
                **({"metrics_data": metrics_data} if metrics_data else {})},
        code_revision=code_revision(),
    )
    return VersionUpload(artifact, VersionCreate(
        signature=chosen,
        reference_profile=profile,
        metrics={**computed, **(metrics or {})},
        lineage=_merge_lineage(inferred, lineage),
        description=description,
    ))


def infer_signature(columns: Sequence[str], feature_views: Sequence[FeatureViewPublic], *,
                    classes: Sequence[int | str] | None = None) -> Signature:
    """Inputs in column order: ``feast`` where exactly one view has a field of that name, else ``request``."""
    inputs, entities = [], []
    for column in columns:
        views = [v for v in feature_views if any(f.name == column for f in v.fields)]
        if len(views) > 1:
            raise PackagingError(f"column {column!r} is a field of several feature views "
                                 f"({', '.join(v.name for v in views)}); pass an explicit signature")
        if views:
            view = views[0]
            inputs.append(SignatureInput(name=str(column), source="feast", feature=f"{view.name}:{column}"))
            entities += [k.name for k in view.join_keys if k.name not in entities]
        else:
            inputs.append(SignatureInput(name=str(column), source="request"))
    output = SignatureOutput(classes=list(classes)) if classes is not None else SignatureOutput()
    if len(output.classes) == 2:
        output.positive_class_index = 1
    return Signature(inputs=inputs, entities=entities, output=output)


def estimator_to_onnx(estimator: Any, x: np.ndarray) -> bytes:
    """skl2onnx conversion: one FP32 ``[batch, n]`` input, probabilities as a tensor (no zipmap)."""
    from skl2onnx import to_onnx

    try:
        onnx_model = to_onnx(estimator, x[:1], options={"zipmap": False}, target_opset=ONNX_OPSETS)
    except Exception as exc:  # skl2onnx raises many kinds for unsupported estimators
        raise PackagingError(f"skl2onnx cannot convert {type(estimator).__name__}: {exc}") from exc
    # skl2onnx lists the opsets a model imports in the order of a set of their domains, which varies with the
    # process's string hashing: sorted, one model converts to the same bytes in every process, so registering it
    # again is recognised as the version already registered (by its digest) instead of becoming a new one.
    opsets = sorted(onnx_model.opset_import, key=lambda opset: opset.domain)
    del onnx_model.opset_import[:]
    onnx_model.opset_import.extend(opsets)
    return onnx_model.SerializeToString()


CONVERSION_SAMPLE = 1000
"""Rows of the training frame, spread evenly over it, that the ONNX conversion is checked on."""
CONVERSION_TOLERANCE = 0.01
"""Largest difference in a class probability between the estimator and its ONNX conversion counted as agreement
(the ONNX graph computes in FP32, so a row whose value sits on a tree's threshold can move a little)."""
CONVERSION_DISAGREEING_SHARE = 0.01
"""Share of the sampled rows allowed to differ by more than the tolerance before the conversion is refused."""


def check_fitted_inputs(estimator: Any, input_names: Sequence[str]) -> None:
    """Refuse inputs in another order, or of another number, than the estimator was fitted on: the ONNX graph takes
    them by position, so a frame whose columns were reordered would score each input as another."""
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None and [str(n) for n in fitted] != list(input_names):
        raise PackagingError(f"the inputs ({', '.join(input_names)}) are not the columns the model was fitted on, in "
                             f"that order ({', '.join(map(str, fitted))}); pass the training frame's columns so")
    count = getattr(estimator, "n_features_in_", None)
    if count is not None and count != len(input_names):
        raise PackagingError(f"the model was fitted on {count} inputs; the signature has {len(input_names)}")


def check_conversion(estimator: Any, artifact: bytes, x: np.ndarray, signature: Signature) -> None:
    """Refuse an ONNX conversion that scores differently from the estimator (skl2onnx converts some estimators
    without error but wrongly, e.g. gradient boosting on native categorical features), on
    :data:`CONVERSION_SAMPLE` rows spread evenly over ``x``."""
    if not hasattr(estimator, "predict_proba"):
        raise PackagingError(f"{type(estimator).__name__} gives no class probabilities (predict_proba), which the "
                             "fleet serves and scores: wrap it in CalibratedClassifierCV, or use an estimator that "
                             "has them")
    sample = x[np.unique(np.linspace(0, len(x) - 1, min(len(x), CONVERSION_SAMPLE)).astype(int))]
    fitted = getattr(estimator, "feature_names_in_", None)
    features = pd.DataFrame(sample.astype(np.float64), columns=list(fitted)) if fitted is not None else sample
    try:
        expected = np.asarray(estimator.predict_proba(features), dtype=np.float64)
    except Exception as exc:  # the estimator's own error on its training inputs
        raise PackagingError(f"{type(estimator).__name__}.predict_proba failed on the training frame: {exc}") from exc
    converted = predict_probabilities(artifact, sample, signature.output)
    if expected.shape != converted.shape:
        raise PackagingError(f"the ONNX model gives probabilities of shape {converted.shape}, the estimator "
                             f"{expected.shape}")
    apart = np.abs(expected - converted).max(axis=1)
    disagreeing = int((apart > CONVERSION_TOLERANCE).sum())
    if disagreeing > CONVERSION_DISAGREEING_SHARE * len(sample):
        raise PackagingError(f"the ONNX conversion of {type(estimator).__name__} scores {disagreeing} of "
                             f"{len(sample)} training rows differently from the estimator (by up to "
                             f"{apart.max():.3f}): skl2onnx does not convert it faithfully (native categorical "
                             "features, for one), or its inputs need more precision than the graph's FP32 (e.g. "
                             "unscaled timestamps): scale them, or register an ONNX file you have checked")


def predict_probabilities(artifact: bytes, x: np.ndarray, output: SignatureOutput) -> np.ndarray:
    """Class probabilities of ``x`` from the ONNX model, as onnxruntime computes them."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own kinds for a file it cannot load
        raise PackagingError(f"onnxruntime cannot load the ONNX model: {exc}") from exc
    names = [o.name for o in session.get_outputs()]
    if output.probabilities not in names:
        raise PackagingError(f"the ONNX model has no output {output.probabilities!r} (it has {', '.join(names)})")
    try:
        (probabilities,) = session.run([output.probabilities], {session.get_inputs()[0].name: x})
    except Exception as exc:  # e.g. inputs of another width than the graph takes
        raise PackagingError(f"onnxruntime cannot score the frame with the ONNX model: {exc}") from exc
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(output.classes):
        raise PackagingError(f"output {output.probabilities!r} should be [batch, {len(output.classes)}] probabilities "
                             f"(convert with zipmap disabled); it is {probabilities.shape}")
    return probabilities


def classification_metrics(probabilities: np.ndarray, labels: Sequence[Any], output: SignatureOutput) -> dict[str, float]:
    """``accuracy`` always; ``auc``, ``precision``, ``recall``, ``f1`` of the positive class when both classes occur."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    truth = np.asarray([_plain(v) for v in labels], dtype=object)
    if len(truth) != len(probabilities):
        raise PackagingError(f"{len(truth)} labels for {len(probabilities)} rows")
    classes = np.asarray(output.classes, dtype=object)
    predicted = classes[probabilities.argmax(axis=1)]
    positive = output.classes[output.positive_class_index]
    is_positive, predicted_positive = truth == positive, predicted == positive
    result = {"accuracy": float(np.mean(truth == predicted))}
    if is_positive.any() and not is_positive.all():
        result["auc"] = float(roc_auc_score(is_positive, probabilities[:, output.positive_class_index]))
        result["precision"] = float(precision_score(is_positive, predicted_positive, zero_division=0))
        result["recall"] = float(recall_score(is_positive, predicted_positive, zero_division=0))
        result["f1"] = float(f1_score(is_positive, predicted_positive, zero_division=0))
    return result


def dataset_hash(frame: pd.DataFrame, labels: Sequence[Any] | None = None) -> str:
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    if labels is not None:
        digest.update(pd.util.hash_pandas_object(pd.Series(list(labels)), index=False).to_numpy().tobytes())
    return digest.hexdigest()


def estimator_params(estimator: Any) -> dict[str, Any]:
    """The estimator's class and its JSON-safe hyper-parameters (nested estimators are left out)."""
    params = {"estimator": type(estimator).__name__}
    for name, value in estimator.get_params(deep=True).items():
        if isinstance(value, bool | int | str) or value is None or (isinstance(value, float) and math.isfinite(value)):
            params[name] = value
    return params


def code_revision(cwd: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the working directory, ``+dirty`` when tracked files changed; None outside a repo."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=5,
                              cwd=cwd)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], check=False, capture_output=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 1 else "")


def _is_estimator(model: Any) -> bool:
    return hasattr(model, "fit") and hasattr(model, "get_params")


def _is_categorical(column: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(column) or isinstance(column.dtype, pd.CategoricalDtype)


def _onnx_bytes(model: Any) -> bytes:
    if isinstance(model, bytes | bytearray):
        return bytes(model)
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise PackagingError(f"no ONNX file at {path}")
        return path.read_bytes()
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    raise PackagingError(f"expected a fitted scikit-learn estimator or an ONNX model, not {type(model).__name__}")


def _with_onnx_outputs(signature: Signature, artifact: bytes, *, explicit: bool) -> Signature:
    """An inferred signature names the ONNX outputs skl2onnx-style (label first, probabilities second)."""
    if explicit:
        return signature
    import onnx

    outputs = [o.name for o in onnx.load_model_from_string(artifact).graph.output]
    wanted = {signature.output.label, signature.output.probabilities}
    if wanted <= set(outputs) or len(outputs) != 2:
        return signature
    output = signature.output.model_copy(update={"label": outputs[0], "probabilities": outputs[1]})
    return signature.model_copy(update={"output": output})


def _split_labels(frame: pd.DataFrame | None, labels: Labels | None) -> tuple[pd.DataFrame | None, list | None]:
    if frame is None:
        if labels is not None:
            raise PackagingError("labels without a frame")
        return None, None
    if not isinstance(frame, pd.DataFrame):
        raise PackagingError(f"expected a pandas DataFrame, not {type(frame).__name__}")
    frame = frame.rename(columns=str)  # inputs are named by the columns: a frame made from an array has 0, 1, ...
    if isinstance(labels, str):
        if labels not in frame.columns:
            raise PackagingError(f"no label column {labels!r} in the frame")
        return frame.drop(columns=[labels]), frame[labels].tolist()
    if labels is None:
        return frame, None
    if isinstance(labels, pd.Series) and not labels.index.equals(frame.index):
        # scikit-learn pairs rows by position, pandas by index: with the two apart, neither guess is safe
        raise PackagingError("the labels' index is not the frame's: pass labels.to_numpy() to pair them by "
                             "position (as scikit-learn's fit does) or labels.reindex(frame.index) to pair them by "
                             "index")
    values = list(labels)
    if len(values) != len(frame):
        raise PackagingError(f"{len(values)} labels for {len(frame)} rows")
    return frame, values


def _matrix(frame: pd.DataFrame, signature: Signature) -> np.ndarray:
    missing = [n for n in signature.input_names if n not in frame.columns]
    if missing:
        raise PackagingError(f"the frame lacks the signature's inputs {', '.join(missing)}")
    try:
        return frame[signature.input_names].to_numpy(dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise PackagingError(f"every input must be numeric (FP32): {exc}") from None


def _merge_lineage(inferred: Lineage, explicit: Lineage | Mapping[str, Any] | None) -> Lineage:
    if explicit is None:
        return inferred
    given = Lineage.model_validate(explicit).model_dump(exclude_unset=True)
    params = {**inferred.params, **given.pop("params", {})}
    return inferred.model_copy(update={**given, "params": params})


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones (JSON and comparisons)."""
    return value.item() if isinstance(value, np.generic) else value
