"""The one tiled similarity kernel: ranks of known positives, and top-k, in bounded memory.

Scores are dot products ``query @ candidates.T``. The order is exact and deterministic: a
candidate ranks ahead of another when its score is higher, or equal and its index lower.
Work is done in tiles of ``query_tile x chunk_size`` scores on the embeddings' own device;
each tile is multiplied once, and working memory is one tile (plus small per-query vectors),
whatever the number of queries or candidates.
"""

from __future__ import annotations

import torch

QUERY_TILE = 2048
CHUNK = 4096


def _groups(keys: torch.Tensor, n_groups: int):
    """Order that sorts ``keys`` (ints in [0, n_groups)) and each group's [start, end) in that order."""
    order = torch.argsort(keys, stable=True)
    bounds = torch.searchsorted(keys[order], torch.arange(n_groups + 1, device=keys.device)).tolist()
    return order, bounds


def positive_scores(query: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor,
                    rows: int = 65536) -> torch.Tensor:
    """Score of every (query, candidate) pair in ``positives`` [P, 2], as a dot product, in bounded memory."""
    out = [(query[positives[s:s + rows, 0]] * candidates[positives[s:s + rows, 1]]).sum(-1)
           for s in range(0, positives.shape[0], rows)]
    return torch.cat(out) if out else query.new_empty(0)


def best_positive(query, candidates, positives):
    """Per query: score and index of its best positive (ties -> lowest index); (-inf, Nc) if none."""
    nq, nc = query.shape[0], candidates.shape[0]
    qi, ci = positives[:, 0], positives[:, 1]
    scores = positive_scores(query, candidates, positives)
    best = torch.full((nq,), float("-inf"), device=query.device).scatter_reduce(0, qi, scores, reduce="amax")
    top = scores == best[qi]
    best_idx = torch.full((nq,), nc, dtype=torch.long, device=query.device)
    return best, best_idx.scatter_reduce(0, qi[top], ci[top], reduce="amin")


def _prepare(query, candidates, positives):
    device = query.device
    return query.float(), candidates.to(device).float(), positives.to(device).long().reshape(-1, 2)


@torch.no_grad()
def ranks_of_best_positive(query: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor,
                           chunk_size: int = CHUNK, query_tile: int = QUERY_TILE) -> torch.Tensor:
    """1-based rank of each query's best positive among all candidates; 0 for queries without one.

    One pass: the positives' scores are read once (a dot product each); the best positive of
    query i has score t_i and index b_i. Then each tile is multiplied once and, per row, the
    candidates ahead of (t_i, b_i) are counted with one comparison against a per-row threshold:
    ``score > t_i`` right of b_i, ``score >= t_i`` (i.e. ``> nextafter(t_i, -inf)``) left of it.
    Only rows whose b_i falls inside the tile need the split, and only there. Positives are then
    taken out of the count by their scores in the same tile: none ranks ahead of the best one
    (by definition), so a last-ulp difference between the dot product and the matmul can never
    rank a positive behind itself or behind another positive.
    """
    query, candidates, positives = _prepare(query, candidates, positives)
    device, nq, nc = query.device, query.shape[0], candidates.shape[0]
    if nq == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    best, best_idx = best_positive(query, candidates, positives)
    has_positive = torch.isfinite(best)
    t = torch.where(has_positive, best, torch.full_like(best, float("inf")))   # no positive: count nothing
    lower = torch.nextafter(t, torch.full_like(t, float("-inf")))
    chunk_size = min(chunk_size, 1 << 24)
    n_qt, n_ct = -(-nq // query_tile), max(1, -(-nc // chunk_size))
    # Positives grouped by tile, and queries grouped by the tile that holds their best positive.
    qi, ci = positives[:, 0], positives[:, 1]
    pos_order, pos_bounds = _groups((qi // query_tile) * n_ct + ci // chunk_size, n_qt * n_ct)
    qi, ci = qi[pos_order], ci[pos_order]
    rows_all = torch.arange(nq, device=device)
    best_tile = torch.where(has_positive, best_idx // chunk_size, torch.full_like(best_idx, n_ct))
    row_order, row_bounds = _groups((rows_all // query_tile) * (n_ct + 1) + best_tile, n_qt * (n_ct + 1))
    ahead = torch.zeros(nq, dtype=torch.long, device=device)
    buf = torch.empty(min(nq, query_tile) * min(nc, chunk_size), device=device)
    for a in range(n_qt):
        qs, qe = a * query_tile, min(nq, (a + 1) * query_tile)
        q = query[qs:qe]
        count = ahead[qs:qe]
        for b in range(n_ct):
            cs, ce = b * chunk_size, min(nc, (b + 1) * chunk_size)
            m, n = qe - qs, ce - cs
            block = torch.mm(q, candidates[cs:ce].T, out=buf[:m * n].view(m, n))
            # Rows whose best positive is inside this tile: the ties left of it rank ahead too.
            r0, r1 = row_bounds[a * (n_ct + 1) + b], row_bounds[a * (n_ct + 1) + b + 1]
            if r1 > r0:
                rows = row_order[r0:r1] - qs
                left = torch.arange(n, device=device)[None, :] < (best_idx[qs:qe][rows] - cs)[:, None]
                count.index_add_(0, rows, ((block[rows] == t[qs:qe][rows, None]) & left).sum(1))
            # Take out the positives the count below includes, reading their scores from this tile.
            p0, p1 = pos_bounds[a * n_ct + b], pos_bounds[a * n_ct + b + 1]
            if p1 > p0:
                pq, pc = qi[p0:p1], ci[p0:p1]
                s = block[pq - qs, pc - cs]
                counted = (s > t[pq]) | ((s == t[pq]) & (pc < best_idx[pq]))
                ahead.index_add_(0, pq, -counted.long())
            # The bulk count, in place (no boolean tile): rows whose best positive lies right of
            # this tile count ties too (> nextafter(t, -inf) is >= t); the others count strictly.
            thr = torch.where(best_idx[qs:qe] >= ce, lower[qs:qe], t[qs:qe])
            count += block.gt_(thr[:, None]).sum(1).long()  # 0/1 sums are exact in fp32 below 2^24
    return torch.where(has_positive, ahead + 1, torch.zeros_like(ahead))


@torch.no_grad()
def topk(query: torch.Tensor, candidates: torch.Tensor, k: int, chunk_size: int = CHUNK,
         query_tile: int = QUERY_TILE) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and indices [Nq, k'] of each query's k best candidates (k' = min(k, Nc)), best first,
    ties -> lower index, on the embeddings' device, one tile of memory at a time."""
    query, candidates = query.float(), candidates.to(query.device).float()
    device, nq, nc = query.device, query.shape[0], candidates.shape[0]
    k = min(k, nc)
    scores = torch.empty(nq, k, device=device)
    index = torch.empty(nq, k, dtype=torch.long, device=device)
    for qs in range(0, nq, query_tile):
        q = query[qs:qs + query_tile]
        run_s = q.new_empty(q.shape[0], 0)
        run_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=device)
        for cs in range(0, nc, chunk_size):
            block = q @ candidates[cs:cs + chunk_size].T
            kk = min(k, block.shape[1])
            s, i = block.topk(kk, dim=1)
            # topk may pick any of several equal scores at the cut: redo those rows with a stable sort.
            cut = s[:, -1:]
            short = ((block == cut).sum(1) > (s == cut).sum(1)).nonzero().flatten()
            if short.numel():
                s[short], i[short] = (x[:, :kk] for x in block[short].sort(dim=1, descending=True, stable=True))
            s, i = _order(s, i + cs)
            run_s, run_i = _order(torch.cat([run_s, s], 1), torch.cat([run_i, i], 1))
            run_s, run_i = run_s[:, :k], run_i[:, :k]
        scores[qs:qs + query_tile], index[qs:qs + query_tile] = run_s, run_i
    return scores, index


def _order(s, i):
    """Sort each row by (score descending, index ascending)."""
    by_index = i.argsort(dim=1)
    s, i = s.gather(1, by_index), i.gather(1, by_index)
    by_score = s.sort(dim=1, descending=True, stable=True).indices
    return s.gather(1, by_score), i.gather(1, by_score)
