"""Drift statistics: live values of one feature against its training reference profile.

Pure logic (numpy, scipy), no Redis and no FastAPI. A numeric feature gets the two-sample
Kolmogorov–Smirnov statistic and p-value against the profile's sample and the population
stability index (PSI) on the profile's quantile bins; a categorical one gets a chi-square
goodness-of-fit test, the Jensen–Shannon distance and PSI on its categories. The
prediction scores are judged like a numeric feature.

Many features are tested at once, so a feature only counts as drifted when its p-value
passes a Bonferroni-corrected level (``alpha / number of tests``) *and* its effect is
larger than the case study's threshold: stationary traffic, however long it runs, does not
cross both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from services.common.profiles import as_model_input, bin_counts

PSI_EPSILON = 1e-4
"""Floor of a bin's frequency in PSI and chi-square, so an empty bin does not make them infinite."""

SCORE_FEATURE = "__score__"
Action = Literal["none", "retrain", "rollback"]
Verdict = Literal["ok", "retrain", "rollback", "insufficient_data", "no_reference"]
ACTION_RANK: dict[str, int] = {"none": 0, "retrain": 1, "rollback": 2}


class DriftThresholds(BaseModel):
    """When a feature has drifted, and what to do about it (defaults from the case study)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ks: float = Field(default=0.15, gt=0, le=1, description="KS statistic above which a numeric feature asks for retraining.")
    psi: float = Field(default=0.25, gt=0, description="PSI above which a feature asks for a rollback.")
    js: float = Field(default=0.1, gt=0, le=1, description="Jensen–Shannon distance above which a category asks for retraining.")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Family-wise significance level, split over the tests (Bonferroni).")
    min_samples: int = Field(default=200, ge=10, description="Fewer live instances than this: no verdict.")


class NumericReference(BaseModel):
    kind: Literal["numeric", "score"]
    bin_edges: list[float] = Field(min_length=2)
    frequencies: list[float] = Field(min_length=1)
    sample: list[float] = Field(default_factory=list)


class CategoricalReference(BaseModel):
    kind: Literal["categorical"]
    categories: list[float] = Field(min_length=1)
    frequencies: list[float] = Field(min_length=1)


FeatureReference = Annotated[NumericReference | CategoricalReference, Field(discriminator="kind")]
_FEATURE_REFERENCE: TypeAdapter[NumericReference | CategoricalReference] = TypeAdapter(FeatureReference)


class Reference(BaseModel):
    """The usable part of a version's ``reference_profile``."""

    features: dict[str, NumericReference | CategoricalReference]
    scores: NumericReference | None = None

    @property
    def empty(self) -> bool:
        return not self.features and self.scores is None


def parse_reference(profile: Mapping | None) -> Reference:
    """Keep the features whose profile is well formed; anything else is left out, never raised."""
    features: dict[str, NumericReference | CategoricalReference] = {}
    raw_features = (profile or {}).get("features") or {}
    for name, raw in raw_features.items() if isinstance(raw_features, Mapping) else ():
        try:
            reference = _FEATURE_REFERENCE.validate_python(raw)
        except ValidationError:
            continue
        if len(reference.frequencies) == _bin_count(reference):
            features[str(name)] = reference
    scores = None
    try:
        candidate = NumericReference.model_validate((profile or {}).get("scores"))
        if len(candidate.frequencies) == _bin_count(candidate):
            scores = candidate
    except ValidationError:
        pass
    return Reference(features=features, scores=scores)


def _bin_count(reference: NumericReference | CategoricalReference) -> int:
    if isinstance(reference, CategoricalReference):
        return len(reference.categories)
    return len(reference.bin_edges) - 1


class Histogram(BaseModel):
    """Reference vs live frequencies on the reference's bins (numbers) or categories."""

    bin_edges: list[float] | None = None
    categories: list[float] | None = None
    reference: list[float]
    live: list[float]


class FeatureDrift(BaseModel):
    feature: str = Field(description=f"Input name; `{SCORE_FEATURE}` for the prediction scores.")
    kind: Literal["numeric", "categorical", "score"]
    n: int = Field(description="Live values compared.")
    ks: float | None = Field(default=None, description="Two-sample Kolmogorov–Smirnov statistic (numbers).")
    chi2: float | None = Field(default=None, description="Chi-square statistic (categories).")
    js: float | None = Field(default=None, description="Jensen–Shannon distance, base 2 (categories).")
    psi: float = Field(description="Population stability index on the reference bins.")
    p_value: float = Field(description="KS p-value (numbers) or chi-square p-value (categories).")
    significant: bool = Field(default=False, description="p-value below the Bonferroni-corrected level.")
    action: Action = Field(default="none", description="`retrain` (effect over KS/JS threshold), `rollback` (PSI).")
    histogram: Histogram

    @property
    def effect(self) -> float:
        """The size of the shift on a 0–1 scale: KS for numbers, Jensen–Shannon for categories."""
        return float(self.ks if self.ks is not None else self.js or 0.0)


def population_stability_index(reference: np.ndarray, live: np.ndarray) -> float:
    """PSI = sum((live - ref) * ln(live / ref)) over bins, each frequency floored at ``PSI_EPSILON``."""
    ref = np.maximum(reference, PSI_EPSILON)
    act = np.maximum(live, PSI_EPSILON)
    return float(np.sum((act - ref) * np.log(act / ref)))


def numeric_drift(name: str, reference: NumericReference, live: np.ndarray) -> FeatureDrift:
    live = as_model_input(live)
    if reference.kind == "score":
        live = np.clip(live, 0.0, 1.0)
    ref_freq = _normalised(reference.frequencies)
    edges = as_model_input(reference.bin_edges)
    live_freq = _normalised(bin_counts(edges, live))
    if reference.sample:
        from scipy.stats import ks_2samp  # on first use: services.common.deferred_imports says why

        result = ks_2samp(as_model_input(reference.sample), live)
        ks, p_value = float(result.statistic), float(result.pvalue)
    else:
        ks = float(np.max(np.abs(np.cumsum(ref_freq) - np.cumsum(live_freq))))
        p_value = _chi_square(ref_freq, bin_counts(edges, live))[1]
    return FeatureDrift(
        feature=name, kind="score" if reference.kind == "score" else "numeric", n=int(live.size), ks=ks,
        psi=population_stability_index(ref_freq, live_freq), p_value=p_value,
        histogram=Histogram(bin_edges=reference.bin_edges, reference=ref_freq.tolist(), live=live_freq.tolist()),
    )


def categorical_drift(name: str, reference: CategoricalReference, live: np.ndarray) -> FeatureDrift:
    """Chi-square, JS and PSI over the reference categories plus one bin for unseen ones."""
    live = as_model_input(live)
    categories = as_model_input(reference.categories)
    known = np.isin(live, categories)
    counts = np.array([np.count_nonzero(live == c) for c in categories] + [np.count_nonzero(~known)], dtype=np.float64)
    ref_freq = np.append(_normalised(reference.frequencies), 0.0)
    live_freq = counts / counts.sum() if counts.sum() else counts
    chi2, p_value = _chi_square(ref_freq, counts)
    # On first use (services.common.deferred_imports says why), scipy.stats first, in the order of the background
    # import: two threads importing scipy's packages in opposite orders could each wait for the other's.
    import scipy.stats  # noqa: F401
    from scipy.spatial.distance import jensenshannon

    return FeatureDrift(
        feature=name, kind="categorical", n=int(live.size), chi2=chi2, p_value=p_value,
        js=float(jensenshannon(np.maximum(ref_freq, PSI_EPSILON), np.maximum(live_freq, PSI_EPSILON), base=2)),
        psi=population_stability_index(ref_freq, live_freq),
        histogram=Histogram(categories=reference.categories, reference=ref_freq[:-1].tolist(),
                            live=live_freq[:-1].tolist() if live_freq.size else []),
    )


def _chi_square(ref_freq: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    total = float(counts.sum())
    if total == 0:
        return 0.0, 1.0
    expected = np.maximum(ref_freq, PSI_EPSILON)
    expected = expected / expected.sum() * total
    from scipy.stats import chisquare  # on first use: services.common.deferred_imports says why

    result = chisquare(counts, expected)
    return float(result.statistic), float(result.pvalue)


def _normalised(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    total = array.sum()
    return array / total if total > 0 else array


def compare(reference: Reference, features: Mapping[str, np.ndarray], scores: np.ndarray | None,
            thresholds: DriftThresholds) -> tuple[list[FeatureDrift], FeatureDrift | None]:
    """Every profiled feature present in the live window, and the scores, judged together."""
    results = [
        (numeric_drift if isinstance(ref, NumericReference) else categorical_drift)(name, ref, features[name])
        for name, ref in reference.features.items() if name in features and features[name].size
    ]
    score = None
    if reference.scores is not None and scores is not None and scores.size:
        score = numeric_drift(SCORE_FEATURE, reference.scores, scores)
    judged = judge(results + ([score] if score else []), thresholds)
    return (judged[:-1], judged[-1]) if score else (judged, None)


def corrected_alpha(tests: int, thresholds: DriftThresholds) -> float:
    return thresholds.alpha / max(tests, 1)


def judge(results: Sequence[FeatureDrift], thresholds: DriftThresholds) -> list[FeatureDrift]:
    """Mark each result significant (Bonferroni) and give it an action."""
    level = corrected_alpha(len(results), thresholds)
    judged = []
    for result in results:
        significant = result.p_value < level
        action: Action = "none"
        if significant and result.psi > thresholds.psi:
            action = "rollback"
        elif significant and result.effect > (thresholds.ks if result.ks is not None else thresholds.js):
            action = "retrain"
        judged.append(result.model_copy(update={"significant": significant, "action": action}))
    return judged


def verdict(results: Sequence[FeatureDrift], *, n: int, thresholds: DriftThresholds, has_reference: bool) -> Verdict:
    """The worst action of any feature or of the scores, once the window is large enough."""
    if not has_reference:
        return "no_reference"
    if n < thresholds.min_samples:
        return "insufficient_data"
    worst = max((ACTION_RANK[r.action] for r in results), default=0)
    return {0: "ok", 1: "retrain", 2: "rollback"}[worst]


def drift_score(results: Sequence[FeatureDrift]) -> float:
    """How far the worst input feature moved (KS or JS), to rank windows."""
    return max((r.effect for r in results if r.feature != SCORE_FEATURE), default=0.0)


def most_shifted_bin(result: FeatureDrift) -> tuple[float, float] | float | None:
    """The live bin (``(low, high)``) or category that gained the most frequency over the reference."""
    gains = np.asarray(result.histogram.live) - np.asarray(result.histogram.reference)
    if gains.size == 0:
        return None
    i = int(np.argmax(gains))
    if result.histogram.categories is not None:
        return result.histogram.categories[i]
    edges = result.histogram.bin_edges or []
    low = -np.inf if i == 0 else edges[i]
    high = np.inf if i == len(edges) - 2 else edges[i + 1]
    return float(low), float(high)
