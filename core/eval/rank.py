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
_SMALL = 64  # pad small matmuls to at least this many rows and columns (BLAS takes another path below ~16)


def _groups(keys: torch.Tensor, n_groups: int):
    """Order that sorts ``keys`` (ints in [0, n_groups)) and each group's [start, end) in that order."""
    order = torch.argsort(keys, stable=True)
    bounds = torch.searchsorted(keys[order], torch.arange(n_groups + 1, device=keys.device)).tolist()
    return order, bounds


def _prepare(query, candidates, positives):
    device = query.device
    positives = torch.unique(positives.to(device).long().reshape(-1, 2), dim=0)  # a pair listed twice counts once
    return query.float(), candidates.to(device).float(), positives


def _best(nq, qi, ci, scores):
    """Per query: the highest score among its positives and its lowest index among equals; (-inf, max) if none."""
    device = scores.device
    best = torch.full((nq,), float("-inf"), device=device).scatter_reduce(0, qi, scores, reduce="amax")
    top = scores == best[qi]
    best_idx = torch.full((nq,), torch.iinfo(torch.long).max, dtype=torch.long, device=device)
    return best, best_idx.scatter_reduce(0, qi[top], ci[top], reduce="amin")


def _positive_scores(query, candidates, qi, ci, rows: int = 256):
    """Every positive's score from a small matmul of its query's rows against the positives'
    candidates. A matmul of at least ~16 x 16 sums in the same order as the big tiles, so these
    usually equal the tiles' scores bit for bit; the pass checks that and repairs any row where not."""
    out = torch.empty(qi.shape[0], device=query.device)
    order, bounds = _groups(qi // rows, -(-query.shape[0] // rows))
    for g in range(len(bounds) - 1):
        if bounds[g + 1] == bounds[g]:
            continue
        sel = order[bounds[g]:bounds[g + 1]]
        q = query[g * rows:(g + 1) * rows]
        cols, where = torch.unique(ci[sel], return_inverse=True)
        q = torch.cat([q, q.new_zeros(max(0, _SMALL - q.shape[0]), q.shape[1])])
        cols = torch.cat([cols, cols[:1].expand(max(0, _SMALL - cols.shape[0]))])
        out[sel] = (q @ candidates[cols].T)[qi[sel] - g * rows, where]
    return out


@torch.no_grad()
def ranks_of_best_positive(query: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor,
                           chunk_size: int = CHUNK, query_tile: int = QUERY_TILE) -> torch.Tensor:
    """1-based rank of each query's best positive among all candidates; 0 for queries without one.

    The best positive of query i (highest score, ties -> lowest index) is found first from small
    matmuls of the positives alone: score t_i, index b_i. Then one pass multiplies each tile
    once and counts, per row, the candidates ahead of (t_i, b_i) with one in-place comparison
    against a per-row threshold: ``score > t_i`` right of b_i, ``score >= t_i`` (that is,
    ``> nextafter(t_i, -inf)``) left of it; only rows whose b_i lies inside the tile need the
    split, and only there. Positives are taken out of the count using their scores in the same
    tile (none ranks ahead of the best one). The same scores then give the exact best positive;
    any row where it differs from (t_i, b_i), because the small matmul rounded differently from
    the tile, is recounted exactly (``_recount``), so ranks are those of the tiles' scores.
    """
    query, candidates, positives = _prepare(query, candidates, positives)
    device, nq, nc = query.device, query.shape[0], candidates.shape[0]
    if nq == 0 or nc == 0:
        return torch.zeros(nq, dtype=torch.long, device=device)
    qi, ci = positives[:, 0], positives[:, 1]
    best, best_idx = _best(nq, qi, ci, _positive_scores(query, candidates, qi, ci))
    has_positive = torch.isfinite(best)
    t = torch.where(has_positive, best, torch.full_like(best, float("inf")))   # no positive: count nothing
    lower = torch.nextafter(t, torch.full_like(t, float("-inf")))
    chunk_size = min(chunk_size, 1 << 24)  # 0/1 sums stay exact in float32
    n_qt, n_ct = -(-nq // query_tile), -(-nc // chunk_size)
    # Positives grouped by tile, and queries grouped by the tile that holds their best positive.
    pos_order, pos_bounds = _groups((qi // query_tile) * n_ct + ci // chunk_size, n_qt * n_ct)
    qi, ci = qi[pos_order], ci[pos_order]
    tile_score = torch.empty(qi.shape[0], device=device)
    best_tile = torch.where(has_positive, best_idx // chunk_size, torch.full_like(best_idx, n_ct))
    row_order, row_bounds = _groups((torch.arange(nq, device=device) // query_tile) * (n_ct + 1) + best_tile,
                                    n_qt * (n_ct + 1))
    ahead = torch.zeros(nq, dtype=torch.long, device=device)
    buf = torch.empty(min(nq, query_tile) * min(nc, chunk_size), device=device)
    columns = torch.arange(min(nc, chunk_size), device=device)
    for a in range(n_qt):
        qs, qe = a * query_tile, min(nq, (a + 1) * query_tile)
        q, count, t_a, b_a = query[qs:qe], ahead[qs:qe], t[qs:qe], best_idx[qs:qe]
        for b in range(n_ct):
            cs, ce = b * chunk_size, min(nc, (b + 1) * chunk_size)
            m, n = qe - qs, ce - cs
            block = torch.mm(q, candidates[cs:ce].T, out=buf[:m * n].view(m, n))
            # Rows whose best positive is inside this tile: the ties left of it rank ahead too.
            r0, r1 = row_bounds[a * (n_ct + 1) + b], row_bounds[a * (n_ct + 1) + b + 1]
            if r1 > r0:
                rows = row_order[r0:r1] - qs
                left = columns[None, :n] < (b_a[rows] - cs)[:, None]
                count.index_add_(0, rows, ((block[rows] == t_a[rows, None]) & left).sum(1))
            # Take out the positives the count includes, by their scores in this tile (kept for the check).
            p0, p1 = pos_bounds[a * n_ct + b], pos_bounds[a * n_ct + b + 1]
            if p1 > p0:
                pq, pc = qi[p0:p1] - qs, ci[p0:p1]
                tile_score[p0:p1] = s = block[pq, pc - cs]
                counted = (s > t_a[pq]) | ((s == t_a[pq]) & (pc < b_a[pq]))
                count.index_add_(0, pq, -counted.long())
            # The bulk count, in place (no boolean tile): rows whose best positive lies right of
            # this tile count ties too; the others count strictly.
            thr = torch.where(b_a >= ce, lower[qs:qe], t_a)
            count += block.gt_(thr[:, None]).sum(1).long()
    exact, exact_idx = _best(nq, qi, ci, tile_score)
    ranks = torch.where(has_positive, ahead + 1, torch.zeros_like(ahead))
    redo = (has_positive & ((exact != best) | (exact_idx != best_idx))).nonzero().flatten()
    if redo.numel():
        ranks[redo] = _recount(query, candidates, positives, redo, chunk_size)
    return ranks


def _recount(query, candidates, positives, rows, chunk_size):
    """Exact ranks for a few query rows, by two passes over identical blocks (the first finds the
    best positive's block score, the second counts against it)."""
    pad = max(0, _SMALL - rows.shape[0])
    q = torch.cat([query[rows], query.new_zeros(pad, query.shape[1])])
    local = torch.full((query.shape[0],), -1, dtype=torch.long, device=query.device)
    local[rows] = torch.arange(rows.shape[0], device=query.device)
    mine = local[positives[:, 0]] >= 0
    pq, pc = local[positives[mine, 0]], positives[mine, 1]
    blocks = lambda: ((cs, q @ candidates[cs:cs + chunk_size].T) for cs in range(0, candidates.shape[0], chunk_size))
    scores = torch.empty(pq.shape[0], device=query.device)
    for cs, block in blocks():
        inside = (pc >= cs) & (pc < cs + block.shape[1])
        scores[inside] = block[pq[inside], pc[inside] - cs]
    best, best_idx = _best(q.shape[0], pq, pc, scores)
    ahead = torch.zeros(q.shape[0], dtype=torch.long, device=query.device)
    for cs, block in blocks():
        idx = torch.arange(cs, cs + block.shape[1], device=query.device)
        ahead += ((block > best[:, None]) | ((block == best[:, None]) & (idx[None, :] < best_idx[:, None]))).sum(1)
    return ahead[:rows.shape[0]] + 1


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
