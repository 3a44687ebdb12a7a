"""How alike two encoders' latent spaces are, before any training (Maniparambil et al., CVPR 2025).

Centred kernel alignment (Kornblith et al., 2019) compares the Gram matrices of paired latents
X [N, Dx] and Y [N, Dy]; mutual nearest neighbours (Huh et al., 2024) compares their k-NN graphs.
Linear CKA is computed exactly in feature space (O(N D^2), no N x N matrix). RBF CKA needs
kernels, so it averages the unbiased HSIC estimator (Song et al., 2012) over minibatches
(Nguyen et al., 2021): memory stays at one [batch, batch] kernel, so 50k samples fit a laptop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _centre(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x - x.mean(0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred rows: exact, in feature space."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs paired rows, got {x.shape[0]} and {y.shape[0]}")
    x, y = _centre(x), _centre(y)
    cross = (y.T @ x).pow(2).sum()
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()).clamp_min(1e-300))


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC of two [n, n] kernel matrices (Song et al., 2012); needs n >= 4."""
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC estimator needs at least 4 samples, got {n}")
    k, l = k.double().clone(), l.double().clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    trace = (k * l.T).sum()
    sums = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = 2 * (k.sum(0) @ l.sum(1)) / (n - 2)    # 1^T K L 1 without the O(n^3) product
    return (trace + sums - cross) / (n * (n - 3))


def median_bandwidth(x: torch.Tensor, sample: int = 2048, seed: int = 0) -> float:
    """The median distance between distinct rows (of a random ``sample`` of them): the RBF bandwidth."""
    x = x.double()
    if x.shape[0] > sample:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:sample]]
    d = torch.cdist(x, x)
    off = d[~torch.eye(d.shape[0], dtype=torch.bool)]
    return float(off.median()) if off.numel() else 1.0


def rbf_kernel(x: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """exp(-||x_i - x_j||^2 / (2 bandwidth^2))."""
    d2 = torch.cdist(x.double(), x.double()).pow(2)
    return torch.exp(-d2 / (2 * bandwidth ** 2))


def _kernel(x: torch.Tensor, kind: str, bandwidth: float | None) -> torch.Tensor:
    if kind == "linear":
        x = x.double()
        return x @ x.T
    return rbf_kernel(x, bandwidth)


def minibatch_cka(x: torch.Tensor, y: torch.Tensor, kernel: str = "rbf", batch_size: int = 1024,
                  seed: int = 0, bandwidth: tuple[float, float] | None = None) -> float:
    """CKA from unbiased HSIC averaged over minibatches of one random permutation (Nguyen et al., 2021).

    ``kernel``: "rbf" (bandwidth per space: the median distance between rows, over a 2,048-row
    sample, unless given) or "linear". With ``batch_size >= N`` it is the full unbiased estimate.
    """
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"minibatch_cka needs paired rows, got {n} and {y.shape[0]}")
    if kernel not in ("rbf", "linear"):
        raise ValueError(f"kernel must be rbf or linear, got {kernel}")
    if kernel == "rbf" and bandwidth is None:
        bandwidth = (median_bandwidth(x, seed=seed), median_bandwidth(y, seed=seed))
    bx, by = bandwidth or (None, None)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    batches = max(1, n // batch_size)   # equal-size batches; at most batch_size - 1 rows left out
    size = n // batches
    xy = xx = yy = 0.0
    for b in range(batches):
        idx = perm[b * size:(b + 1) * size]
        k, l = _kernel(x[idx], kernel, bx), _kernel(y[idx], kernel, by)
        xy += float(hsic_unbiased(k, l))
        xx += float(hsic_unbiased(k, k))
        yy += float(hsic_unbiased(l, l))
    return xy / math.sqrt(max(xx * yy, 1e-300))


def knn_indices(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Each row's k nearest other rows by cosine similarity [N, k], in chunks of queries."""
    if not 0 < k < x.shape[0]:
        raise ValueError(f"k must be between 1 and N - 1 = {x.shape[0] - 1}, got {k}")
    x = F.normalize(x.float(), dim=-1)
    out = []
    for start in range(0, x.shape[0], chunk):
        sims = x[start:start + chunk] @ x.T
        rows = torch.arange(start, min(start + chunk, x.shape[0]))
        sims[torch.arange(len(rows)), rows] = float("-inf")   # a row is not its own neighbour
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out)


def mutual_knn(x: torch.Tensor, y: torch.Tensor, k: int = 10) -> float:
    """Mean fraction of each item's k nearest neighbours shared by both spaces (Huh et al., 2024)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"mutual_knn needs paired rows, got {x.shape[0]} and {y.shape[0]}")
    a, b = knn_indices(x, k), knn_indices(y, k)
    shared = (a[:, :, None] == b[:, None, :]).any(-1).sum(1)   # [N]: neighbours in both lists
    return float(shared.double().mean() / k)
