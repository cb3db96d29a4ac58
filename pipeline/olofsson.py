"""Area-adjusted accuracy and class areas with confidence intervals (Olofsson et al. 2014).

P. Olofsson, G. M. Foody, M. Herold, S. V. Stehman, C. E. Woodcock, M. A. Wulder, "Good
practices for estimating area and assessing accuracy of land change", Remote Sensing of
Environment 148 (2014) 42–57: the stratified estimators with the map classes as strata.

Input: the error matrix ``n[i, j]`` of the reference sample (row ``i``: map class, column
``j``: reference class) and the map's pixel count per class. With ``W_i`` the map proportion of
class ``i`` and ``n_i·`` the sample count in map class ``i``:

- ``p_ij = W_i · n_ij / n_i·`` (eq. 9), overall accuracy ``O = Σ_j p_jj`` (eq. 1), user's
  accuracy ``U_i = p_ii / p_i·``, producer's accuracy ``P_j = p_jj / p_·j`` (eqs. 2, 3);
- area proportion ``p_·k = Σ_i p_ik``, area ``A_k = A · p_·k`` (eq. 11 and Â = A·p̂);
- ``SE(p_·k) = sqrt(Σ_i W_i² (n_ik/n_i·)(1 − n_ik/n_i·) / (n_i· − 1))`` (eq. 10),
  ``V(O) = Σ_i W_i² U_i (1 − U_i) / (n_i· − 1)`` (eq. 5), ``V(U_i) = U_i (1 − U_i) /
  (n_i· − 1)`` (eq. 6) and ``V(P_j)`` of eq. 7, with ``N_i·`` the map's pixel count of class
  ``i`` and ``N̂_·j = Σ_i N_i· n_ij / n_i·``.

Confidence intervals are ±1.96 standard errors (95 %). A map class with fewer than two sample
pixels has no variance: its terms, and whatever depends on them, are NaN (and with no sample
pixel at all, the areas are NaN: its share of the map cannot be assigned to reference classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Z95", "AreaEstimate", "olofsson"]

Z95 = 1.96


@dataclass(frozen=True)
class AreaEstimate:
    """The stratified estimates; arrays are per class, ``*_se`` their standard errors."""

    proportions: np.ndarray  # p_ij, map rows, reference columns
    overall: float
    overall_se: float
    users: np.ndarray
    users_se: np.ndarray
    producers: np.ndarray
    producers_se: np.ndarray
    area: np.ndarray  # Â_k in area units
    area_se: np.ndarray
    map_area: np.ndarray  # A_m,k: the map's own area per class


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def olofsson(n: np.ndarray, map_pixels: np.ndarray, pixel_area: float) -> AreaEstimate:
    """The stratified estimators for error matrix ``n`` (map rows) and the map's class counts."""
    n = np.asarray(n, np.float64)
    big_n = np.asarray(map_pixels, np.float64)  # N_i·
    weights = big_n / big_n.sum()  # W_i
    row = n.sum(1)  # n_i·
    frac = _ratio(n, row[:, None])  # n_ij / n_i·
    frac_or0 = np.nan_to_num(frac)
    p = weights[:, None] * frac_or0
    col = p.sum(0)  # p_·j
    users = np.diag(frac)
    producers = _ratio(np.diag(p), col)
    dof = np.where(row > 1, row - 1, np.nan)
    mapped = weights > 0  # empty map classes are no stratum and contribute nothing
    strata = weights[:, None] ** 2 * frac_or0 * (1 - frac_or0) / dof[:, None]
    area_var = np.where(mapped[:, None], strata, 0.0).sum(0)
    if (mapped & (row == 0)).any():  # a stratum without sample: its area goes nowhere
        col = np.full_like(col, np.nan)
    overall_var = np.sum(np.where(mapped, weights**2 * users * (1 - users) / dof, 0.0))
    users_var = users * (1 - users) / dof
    return AreaEstimate(
        proportions=p, overall=float(np.trace(p)), overall_se=float(np.sqrt(overall_var)),
        users=users, users_se=np.sqrt(users_var), producers=producers,
        producers_se=np.sqrt(_producers_var(n, big_n, row, dof, users, producers)),
        area=col * big_n.sum() * pixel_area, area_se=np.sqrt(area_var) * big_n.sum() * pixel_area,
        map_area=big_n * pixel_area,
    )


def _producers_var(n: np.ndarray, big_n: np.ndarray, row: np.ndarray, dof: np.ndarray,
                   users: np.ndarray, producers: np.ndarray) -> np.ndarray:
    """Eq. 7, the variance of the producer's accuracies.

    ``V(P_j) = [N_j·² (1−P_j)² U_j (1−U_j) / (n_j·−1) + P_j² Σ_{i≠j} N_i·² (n_ij/n_i·)
    (1 − n_ij/n_i·) / (n_i·−1)] / N̂_·j²``.
    """
    frac = np.nan_to_num(_ratio(n, row[:, None]))
    est = (big_n[:, None] * frac).sum(0)  # N̂_·j
    k = len(row)
    out = np.empty(k)
    for j in range(k):
        others = [i for i in range(k) if i != j and big_n[i] > 0]
        rest = sum(big_n[i] ** 2 * frac[i, j] * (1 - frac[i, j]) / dof[i] for i in others)
        first = 0.0 if big_n[j] == 0 else (
            big_n[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / dof[j]
        )
        out[j] = (first + producers[j] ** 2 * rest) / est[j] ** 2 if est[j] > 0 else np.nan
    return out
