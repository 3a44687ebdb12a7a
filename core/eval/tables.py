"""Small printed tables and plots of evaluation results."""

from __future__ import annotations


def format_table(columns: dict[str, dict[str, float]], keys: list[str] | None = None) -> str:
    """Rows = metric names, columns = named result sets (e.g. before / after)."""
    names = list(columns)
    if keys is None:
        keys = [k for k in next(iter(columns.values())) if "R@" in k or k.endswith("acc")]
    width = max(len(k) for k in keys) if keys else 6
    colw = max(12, *(len(n) for n in names))
    lines = [" " * width + "  " + "  ".join(f"{n:>{colw}}" for n in names)]
    for k in keys:
        cells = []
        for n in names:
            v = columns[n].get(k)
            cells.append(f"{v:>{colw}.2f}" if isinstance(v, (int, float)) else f"{'-':>{colw}}")
        lines.append(f"{k:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def plot_recall_curves(curves: dict[str, dict[str, list[float]]], png) -> None:
    """Recall@K against K, one line per direction and variant (model, baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, directions in curves.items():
        for direction, values in directions.items():
            ax.plot(range(1, len(values) + 1), values, label=f"{variant}: {direction}",
                    linestyle="-" if variant == "model" else "--")
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K (%)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_worst_classes(per_class: dict[str, float], png, n: int = 20) -> None:
    """The n classes with the lowest zero-shot top-1 accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worst = sorted(per_class.items(), key=lambda kv: (kv[1], kv[0]))[:n]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(worst) + 1))
    ax.barh([k for k, _ in worst][::-1], [v for _, v in worst][::-1])
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_title(f"{len(worst)} worst classes")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_confusion(counts, names: list[str], png, labelled_max: int = 30) -> None:
    """A row-normalised confusion matrix (row = true class, column = predicted): each row shows where that
    class's items went, so rare and common classes read alike. Up to ``labelled_max`` classes get tick
    labels and each cell its percentage; beyond that the picture shows the pattern only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(counts, dtype=float)
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0) * 100
    n = len(names)
    side = min(12.0, 3 + 0.35 * n) if n <= labelled_max else 8.0
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    # Many classes have more cells than pixels: average them down instead of dropping rows and columns.
    shown = ax.imshow(share, cmap="Blues", vmin=0, vmax=100, interpolation="nearest" if n <= labelled_max else "antialiased")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="% of the true class's items")
    if n <= labelled_max:
        ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, f"{share[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 60 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"zero-shot confusion ({n} classes, rows sum to 100%)")
    fig.tight_layout()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
