"""Unit tests of the drift statistics, the multiple-testing correction and reference parsing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from services.common.profiles import bin_counts, build_reference_profile, categorical_profile, numeric_profile
from services.monitor.drift import (
    SCORE_FEATURE, DriftThresholds, FeatureDrift, Histogram, categorical_drift, compare, judge,
    numeric_drift, parse_reference, population_stability_index, verdict,
)

frequencies = st.lists(st.floats(min_value=0.01, max_value=1), min_size=2, max_size=20)


def reference(values, **kwargs):
    return parse_reference(build_reference_profile({"x": values}, **kwargs)).features["x"]


@given(frequencies)
def test_psi_of_a_distribution_with_itself_is_zero_and_positive_otherwise(weights):
    p = np.asarray(weights) / sum(weights)
    assert population_stability_index(p, p) == pytest.approx(0.0, abs=1e-12)
    q = np.roll(p, 1)
    assert population_stability_index(p, q) >= 0.0


def test_values_beyond_the_reference_edges_fall_in_the_outer_bins():
    assert bin_counts([0.0, 1.0, 2.0, 3.0], np.array([-5.0, 0.5, 1.0, 2.5, 99.0])).tolist() == [2, 1, 2]


def test_numeric_drift_is_scipys_ks_against_the_profile_sample():
    rng = np.random.default_rng(0)
    ref = reference(rng.normal(0, 1, 5000))
    live = rng.normal(0.5, 1, 400)
    result = numeric_drift("x", ref, live)
    expected = stats.ks_2samp(np.asarray(ref.sample, dtype=np.float32).astype(np.float64),
                              live.astype(np.float32).astype(np.float64))
    assert (result.ks, result.p_value) == pytest.approx((expected.statistic, expected.pvalue))
    assert result.n == 400 and result.psi > 0.1
    assert len(result.histogram.live) == len(result.histogram.reference) == len(ref.bin_edges) - 1


def test_float32_rounding_of_live_inputs_is_not_drift():
    """Gateways log FP32 tensors: a lumpy feature must compare equal to its float64 training values."""
    atoms = np.repeat(np.round(np.linspace(0.01, 0.99, 30), 4), 100)
    ref = reference(atoms.astype(np.float32))
    result = numeric_drift("x", ref, np.random.default_rng(1).choice(atoms, 1000))
    assert result.ks < 0.06 and result.psi < 0.05


@pytest.mark.parametrize("steps", [10, 20])
def test_scores_on_the_bin_edges_are_binned_alike_in_the_profile_and_live(steps):
    """Scores in steps of 1/10 or 1/20 (a forest of 10 or 20 trees, kNN), as onnxruntime's FP32 gives them: several
    sit exactly on an edge (0.35, 0.7, 0.95, …). Binned one way at registration and another live, unchanged traffic
    had a PSI of 1–2.4, and the monitor asked for a rollback."""
    values = (np.arange(steps + 1) / steps).astype(np.float32).astype(np.float64)
    rng = np.random.default_rng(steps)
    ref = parse_reference(build_reference_profile({}, rng.choice(values, 20_000))).scores
    result = numeric_drift(SCORE_FEATURE, ref, rng.choice(values, 2_000))
    assert result.psi < 0.02 and result.histogram.live == pytest.approx(result.histogram.reference, abs=0.02)


def test_a_value_repeated_across_quantiles_gets_a_bin_of_its_own():
    """A 0/1 flag, or a feature that is mostly zeros: merged into one bin, a change in the share of its ones (or
    zeros) had a PSI of 0 and could never ask for a rollback."""
    rng = np.random.default_rng(8)
    flag = reference((rng.random(50_000) < 0.3).astype(float))
    assert flag.frequencies == pytest.approx([0.7, 0.3], abs=0.01)
    assert numeric_drift("x", flag, (rng.random(2_000) < 0.3).astype(float)).psi < 0.01
    assert numeric_drift("x", flag, (rng.random(2_000) < 0.9).astype(float)).psi > 1.0

    def sparse(n: int, zeros: float) -> np.ndarray:
        return np.where(rng.random(n) < zeros, 0.0, rng.exponential(100, n))
    mostly_zero = reference(sparse(50_000, 0.95))
    assert mostly_zero.frequencies[0] == pytest.approx(0.95, abs=0.01), "the zeros alone in the first bin"
    assert numeric_drift("x", mostly_zero, sparse(2_000, 0.95)).psi < 0.05
    assert numeric_drift("x", mostly_zero, sparse(2_000, 0.5)).psi > 1.0


def test_categorical_drift_uses_chi_square_and_jensen_shannon():
    ref = parse_reference({"features": {"c": categorical_profile([0] * 700 + [1] * 300)}}).features["c"]
    same = categorical_drift("c", ref, np.array([0] * 70 + [1] * 30, dtype=float))
    moved = categorical_drift("c", ref, np.array([0] * 30 + [1] * 60 + [7] * 10, dtype=float))
    assert same.js == pytest.approx(0.0, abs=1e-3) and same.p_value > 0.9
    assert moved.js > 0.3 and moved.p_value < 1e-6 and moved.psi > 0.25
    assert moved.histogram.categories == [0.0, 1.0] and moved.histogram.live == [0.3, 0.6]


def drift(feature: str, *, ks: float | None, psi: float, p: float, js: float | None = None) -> FeatureDrift:
    return FeatureDrift(feature=feature, kind="numeric" if ks is not None else "categorical", n=500, ks=ks, js=js,
                        psi=psi, p_value=p, histogram=Histogram(reference=[1.0], live=[1.0]))


def test_bonferroni_needs_the_p_value_below_alpha_over_the_number_of_tests():
    thresholds = DriftThresholds()
    results = [drift("a", ks=0.2, psi=0.1, p=0.004), drift("b", ks=0.2, psi=0.1, p=0.006)]
    results += [drift(f"other{i}", ks=0.01, psi=0.0, p=0.9) for i in range(8)]
    judged = {r.feature: r for r in judge(results, thresholds)}
    assert (judged["a"].significant, judged["a"].action) == (True, "retrain")
    assert (judged["b"].significant, judged["b"].action) == (False, "none"), "0.006 > 0.05 / 10"


def test_effects_below_the_thresholds_are_not_drift_however_significant():
    judged = judge([drift("a", ks=0.1, psi=0.2, p=1e-12), drift("c", ks=None, js=0.05, psi=0.1, p=1e-12)],
                   DriftThresholds())
    assert [r.action for r in judged] == ["none", "none"]
    assert [r.action for r in judge([drift("a", ks=0.1, psi=0.3, p=1e-9)], DriftThresholds())] == ["rollback"]


def test_the_verdict_is_the_worst_action_once_there_are_enough_samples():
    thresholds = DriftThresholds(min_samples=100)
    retrain = judge([drift("a", ks=0.2, psi=0.1, p=1e-9), drift("b", ks=0.01, psi=0.0, p=0.9)], thresholds)
    assert verdict(retrain, n=500, thresholds=thresholds, has_reference=True) == "retrain"
    assert verdict(retrain, n=99, thresholds=thresholds, has_reference=True) == "insufficient_data"
    assert verdict([], n=500, thresholds=thresholds, has_reference=False) == "no_reference"


def test_compare_judges_features_and_scores_together():
    rng = np.random.default_rng(2)
    profile = build_reference_profile({"x": rng.normal(0, 1, 3000), "c": rng.integers(0, 3, 3000)},
                                      rng.uniform(0, 1, 3000), categorical=["c"])
    features, scores = compare(parse_reference(profile),
                               {"x": rng.normal(2, 1, 500), "c": rng.integers(0, 3, 500).astype(float),
                                "unprofiled": np.zeros(500)}, rng.uniform(0, 1, 500), DriftThresholds())
    assert [f.feature for f in features] == ["x", "c"] and scores.feature == SCORE_FEATURE
    assert [f.action for f in features] == ["rollback", "none"] and scores.action == "none"


def test_malformed_profiles_keep_only_their_valid_features():
    good = numeric_profile([1.0, 2.0, 3.0, 4.0])
    parsed = parse_reference({"features": {"ok": good, "bad": {"kind": "numeric", "bin_edges": [1.0]},
                                           "mismatch": {**good, "frequencies": [1.0]}, "odd": 3}, "scores": "x"})
    assert list(parsed.features) == ["ok"] and parsed.scores is None
    assert parse_reference(None).empty and parse_reference({}).empty


def test_categorical_columns_must_exist():
    with pytest.raises(ValueError, match="not among the columns"):
        build_reference_profile({"x": [1.0]}, categorical=["y"])
