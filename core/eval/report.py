"""Small printed tables of metrics."""

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
