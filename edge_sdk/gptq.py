"""GPTQ rounding (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers") of weight rows onto a given int8 grid, in numpy. edge_sdk.prepass
gathers the input covariances and applies it to every Conv and Gemm (round_weights)."""

from __future__ import annotations

import numpy as np

DAMP = 0.01  # GPTQ's dampening: 1% of the mean input variance keeps the covariance invertible
BLOCK = 128  # GPTQ's lazy-update block: columns rounded before the rest of the row is updated


def scale_setters(rows: np.ndarray, *, per_channel: bool) -> np.ndarray:
    """The elements with the largest magnitude in each row (or in the tensor): they set the scale."""
    magnitude = np.abs(rows)
    return magnitude == magnitude.max(axis=2 if per_channel else None, keepdims=True)


def gptq_round(rows: np.ndarray, cov: np.ndarray, scale: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Rounds rows (G, R, K) column by column; each column's rounding error is spread over the columns
    not yet rounded through the inverse input covariance, so the output error E|(Q - W) x|^2 stays
    small. Where `fixed` is not NaN the rounded value is given. Values stay within +-127 steps."""
    groups, n_rows, k = rows.shape
    upper = _inverse_cholesky(cov)
    w, q = rows.copy(), np.empty_like(rows)
    step = scale[..., 0]
    for start in range(0, k, BLOCK):
        end = min(start + BLOCK, k)
        errors = np.empty((groups, n_rows, end - start))
        for i in range(start, end):
            column = w[:, :, i]
            nearest = np.clip(np.round(column / step), -127, 127) * step
            q[:, :, i] = np.where(np.isnan(fixed[:, :, i]), nearest, fixed[:, :, i])
            error = (column - q[:, :, i]) / upper[:, i, i][:, None]
            w[:, :, i + 1 : end] -= error[:, :, None] * upper[:, None, i, i + 1 : end]
            errors[:, :, i - start] = error
        w[:, :, end:] -= errors @ upper[:, start:end, end:]
    return q


def _inverse_cholesky(cov: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor of the dampened inverse covariance, per group. Inputs with no variance
    (never active, or constant: the bias correction covers those) are decoupled from the others."""
    k = cov.shape[-1]
    diag = np.einsum("gkk->gk", cov)
    dead = diag <= 1e-12 * np.maximum(diag.max(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    h = np.where(dead[:, :, None] | dead[:, None, :], 0.0, cov)
    live_mean = np.where(dead, 0.0, diag).sum(axis=1) / np.maximum((~dead).sum(axis=1), 1)
    damp = DAMP * live_mean[:, None]
    for _ in range(4):
        try:
            h_damped = h + np.eye(k) * np.where(dead, 1.0, damp)[:, :, None]
            return np.linalg.cholesky(np.linalg.inv(h_damped)).transpose(0, 2, 1)
        except np.linalg.LinAlgError:
            damp = damp * 10  # rounding noise made the covariance indefinite: dampen more
    raise np.linalg.LinAlgError("input covariance stays indefinite after dampening")
