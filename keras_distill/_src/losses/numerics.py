"""Numerically sound building blocks of the divergences: accurate at every temperature.

At a large temperature `T` the softened distributions `softmax(z / T)` are
nearly uniform and their divergence is tiny (about `var(t - s) / (2 T**2)`), so
`T**2 * KL` computed as a sum of `p * (log p - log q)` loses every digit to
float32 cancellation (`kl_divergence` at `T = 1e6` gave -11172 for a true 3.45).
These functions never subtract nearly equal numbers: a divergence is written
as `log(1 + E_p[exp(-e) - 1 + e])` over centered log-ratios `e`, a sum of
non-negative terms each computed without cancellation.

Standardization (z-scoring) and correlations divide by a spread; their floors
scale with the input's magnitude, so a spread below float32 resolution (the
rounding noise of logits far from zero) is treated as none, not blown up to +-1.
"""

from __future__ import annotations

from keras import ops

# Below this |e|, exp(-e) - 1 + e is summed as its series (truncation < 3e-7 relative).
SERIES_LIMIT = 0.1
# exp(80) is finite in float32; beyond it the log-sum-exp form takes over.
OVERFLOW_LIMIT = 80.0
# A spread below this fraction of max(|input|, 1) is treated as none: rounding noise far from
# zero (about 8 float32 ulps), and below 1e-6 near zero, where adding a constant to the logits
# would round it away (so a shift never turns a flat row into +-1).
RELATIVE_FLOOR = 1e-6
# Keeps an all-zero input finite (its square is still a normal float32).
TINY = 1e-15


def exp_remainder(e):
    """`exp(-e) - 1 + e` (>= 0), accurate for tiny `e` where the direct form cancels.

    Example:
    >>> import numpy as np
    >>> f"{float(exp_remainder(np.float32(1e-6))):.3g}"  # e**2 / 2; the direct form gives 0
    '5e-13'
    """
    e = ops.cast(e, "float32")
    series = ops.square(e) * (0.5 + e * (-1.0 / 6.0 + e * (1.0 / 24.0 + e * (-1.0 / 120.0))))
    # Each branch is evaluated everywhere: the unselected one may overflow, never the result
    # (`e < -OVERFLOW_LIMIT` is left to `kl_from_log_ratio`'s log-sum-exp form).
    return ops.where(ops.abs(e) < SERIES_LIMIT, series, ops.expm1(-e) + e)


def kl_from_log_ratio(log_p, log_ratio):
    """`KL(p || r)` over the last axis, from `log p` and `log p - log r` (plus any constant).

    `KL = log E_p[exp(-e)]` with `e` the log-ratio centered under `p`; written
    as `log1p(E_p[exp(-e) - 1 + e])` it is a sum of non-negative terms, exact
    to float32 precision however small the divergence. Where `exp(-e)` would
    overflow, the log-sum-exp form is used.

    Args:
        log_p: Log-probabilities `(..., classes)` of the first distribution.
        log_ratio: `log p - log r` (up to a constant per row), the same shape.

    Returns:
        The divergence, shape `(...)`.

    Example:
    >>> import numpy as np
    >>> log_p = np.log(np.array([[0.5, 0.5]], "float32"))
    >>> f"{float(kl_from_log_ratio(log_p, np.array([[1e-4, -1e-4]], 'float32'))[0]):.3g}"
    '5e-09'
    """
    return _kl_with_gradient(ops.cast(log_p, "float32"), ops.cast(log_ratio, "float32"))


@ops.custom_gradient
def _kl_with_gradient(log_p, log_ratio):
    """`kl_from_log_ratio` in float32, with its gradient written out.

    With `r` the second distribution, the gradient is `p - r` for the log-ratio
    and `p * e + r - p` for `log p` (exact for normalized `log p`, whose
    derivatives are orthogonal to `p`). Both are computed without cancellation,
    and the step does not differentiate the series and branches of the value:
    a third of the operations of automatic differentiation.
    """
    p = ops.exp(log_p)
    e = log_ratio - ops.sum(p * log_ratio, axis=-1, keepdims=True)
    near = ops.log1p(ops.sum(p * exp_remainder(e), axis=-1))
    far = _logsumexp(log_p - e)
    kl = ops.where(ops.min(e, axis=-1) < -OVERFLOW_LIMIT, far, near)

    def gradient(*args, upstream=None):
        upstream = ops.expand_dims(args[0] if upstream is None else upstream, -1)
        r_minus_p = _r_minus_p(log_p, p, -(e + kl[..., None]))
        return upstream * (p * e + r_minus_p), -upstream * r_minus_p

    return kl, gradient


def _logsumexp(values):
    """`log(sum(exp(values)))` over the last axis, for finite values (no gradient needed)."""
    largest = ops.max(values, axis=-1, keepdims=True)
    return ops.log(ops.sum(ops.exp(values - largest), axis=-1)) + largest[..., 0]


def _r_minus_p(log_p, p, log_r_over_p):
    """`r - p` from `log(r / p)`: `p * expm1(.)` near `p`, the direct difference far from it."""
    bounded = ops.minimum(log_r_over_p, OVERFLOW_LIMIT)
    return ops.where(
        log_r_over_p < OVERFLOW_LIMIT, p * ops.expm1(bounded), ops.exp(log_p + log_r_over_p) - p
    )


def log_mean_exp(log_w, values):
    """`log sum_i w_i exp(values_i)` over the last axis, accurate for nearly equal values.

    Example:
    >>> import numpy as np
    >>> log_w = np.log(np.array([[0.5, 0.5]], "float32"))
    >>> round(float(log_mean_exp(log_w, np.array([[0.0, 0.0]], "float32"))[0]), 6)
    0.0
    """
    values = ops.cast(values, "float32")
    mean = ops.sum(ops.exp(ops.cast(log_w, "float32")) * values, axis=-1)
    return mean + kl_from_log_ratio(log_w, -values)


def log_half_one_plus_exp(g):
    """`log((1 + exp(g)) / 2)`, accurate for tiny `g` and finite for large `g`.

    Example:
    >>> import numpy as np
    >>> f"{float(log_half_one_plus_exp(np.float32(2e-6))):.3g}"  # g / 2
    '1e-06'
    """
    g = ops.cast(g, "float32")
    small = ops.clip(g, -1.0, 1.0)
    return ops.where(
        ops.abs(g) < 1.0, ops.log1p(0.5 * ops.expm1(small)), ops.softplus(g) - ops.log(2.0)
    )


def centered_probabilities(logits):
    """`(softmax(z) - 1 / V) * V` over the last axis, without cancellation near uniform.

    Correlations of probabilities do not change under this affine map, and it
    keeps the deviations from uniform that a large temperature makes tiny.

    Example:
    >>> import numpy as np
    >>> z = np.array([[1e-6, 0.0]], "float32")
    >>> [f"{v:.3g}" for v in np.asarray(centered_probabilities(z))[0]]  # softmax: [0.5, 0.5]
    ['5e-07', '-5e-07']
    """
    logits = ops.cast(logits, "float32")
    deviation = logits - ops.mean(logits, axis=-1, keepdims=True)
    uniform = ops.zeros_like(logits) - ops.log(ops.cast(ops.shape(logits)[-1], "float32"))
    return ops.expm1(deviation - log_mean_exp(uniform, deviation)[..., None])


def scaled(logits, temperature):
    """`(z - max(z)) / T` in float32: shifted first, so a large `|z|` keeps its differences.

    Example:
    >>> import numpy as np
    >>> np.round(np.asarray(scaled(np.array([[1e4 + 1.0, 1e4]], "float32"), 1e-3)), 3).tolist()
    [[0.0, -1000.0]]
    """
    logits = ops.cast(logits, "float32")
    shift = ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))
    return (logits - shift) / ops.cast(temperature, "float32")


def magnitude_floor(values, axis=-1, least_magnitude=0.0):
    """A spread floor: `RELATIVE_FLOOR` times `max(largest |value|, least_magnitude)`.

    Logits can be shifted by any constant, so their floor counts magnitudes
    below 1 as 1 (`least_magnitude=1.0`): a spread that adding a constant
    would round away is never blown up to +-1. Probabilities cannot be
    shifted: their floor scales with their own magnitude.

    Example:
    >>> import numpy as np
    >>> f"{float(magnitude_floor(np.array([200.0, 200.0]))[0]):.3g}"
    '0.0002'
    >>> f"{float(magnitude_floor(np.array([0.0, 1e-8]), least_magnitude=1.0)[0]):.3g}"
    '1e-06'
    """
    largest = ops.max(ops.abs(ops.cast(values, "float32")), axis=axis, keepdims=True)
    return RELATIVE_FLOOR * ops.maximum(largest, least_magnitude) + TINY


def standardized(logits, axis=-1):
    """`(z - mean(z)) / std(z)` with a floor on `std` that scales with `|z|`.

    A spread below float32 resolution of the logits' magnitude (rounding noise)
    gives nearly flat values rather than +-1.

    Example:
    >>> import numpy as np
    >>> z = np.float32(2.0) + np.array([[2.4e-7, 0.0]], "float32")  # one ulp apart
    >>> bool(np.all(np.abs(np.asarray(standardized(z))) < 0.2))  # not +-1
    True
    """
    logits = ops.cast(logits, "float32")
    mean = ops.mean(logits, axis=axis, keepdims=True)
    variance = ops.var(logits, axis=axis, keepdims=True)
    floor = magnitude_floor(logits, axis, least_magnitude=1.0)
    return (logits - mean) / ops.sqrt(variance + ops.square(floor))


def pearson_distance(a, b, axis):
    """`1 - Pearson correlation` of `a` and `b` along `axis`, as `|a^ - b^|**2 / 2`.

    The unit vectors' distance has no cancellation when the correlation is
    near 1; the norms' floors scale with the inputs' magnitude (a flat input
    correlates 0 with anything, so the distance is 1).

    Example:
    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0, 4.0]], "float32")
    >>> round(float(pearson_distance(x, 3 * x + 1, axis=-1)[0]), 6)
    0.0
    """
    units, shortfalls = [], []
    for values in (ops.cast(a, "float32"), ops.cast(b, "float32")):
        centered = values - ops.mean(values, axis=axis, keepdims=True)
        norm_squared = ops.sum(ops.square(centered), axis=axis, keepdims=True)
        floor_squared = ops.square(magnitude_floor(values, axis))
        units.append(centered / ops.sqrt(norm_squared + floor_squared))
        # 1 - |unit|**2, exactly: a flat input has no direction and correlates 0.
        shortfalls.append(ops.squeeze(floor_squared / (norm_squared + floor_squared), axis))
    distance = 0.5 * ops.sum(ops.square(units[0] - units[1]), axis=axis)
    return distance + 0.5 * (shortfalls[0] + shortfalls[1])
