"""The report's pictures: latency dense vs pruned per target and batch, kept units per layer."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_plot(report: dict, path: Path) -> None:
    plt = _pyplot()
    rows = []
    for target, result in report["targets"].items():
        by_batch = result.get("by_batch") or {str(report["input_shape"][0]): result}
        for batch, figures in by_batch.items():
            rows.append((f"{target}\nbatch {batch}", figures["dense_ms"], figures["pruned_ms"], figures["speedup"]))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows) + 2), 4))
    width = 0.38
    for i, (_label, dense, pruned, speedup) in enumerate(rows):
        for offset, figures, color, name in ((-width / 2, dense, "#7f7f7f", "dense"), (width / 2, pruned, "#1f77b4", "pruned")):
            ax.bar(
                i + offset,
                figures["p50"],
                width,
                color=color,
                label=name if i == 0 else None,
                yerr=[[0], [max(figures["p90"] - figures["p50"], 0)]],
                capsize=3,
            )
        ax.text(i, max(dense["p50"], pruned["p50"]) * 1.08, f"{speedup:.2f}x", ha="center", fontsize=9)
    ax.set_xticks(range(len(rows)), [r[0] for r in rows])
    ax.set_ylabel("latency p50 (ms), whisker to p90")
    ax.set_title(f"{report['model']}: dense vs pruned ({report['scorer']})")
    ax.set_ylim(0, max(max(r[1]["p90"], r[2]["p90"]) for r in rows) * 1.25 if rows else 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kept_units_plot(layers: list[dict], path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(layers) + 2), 4.2))
    positions = range(len(layers))
    ax.bar(positions, [l["size"] for l in layers], color="#d9d9d9", label="dense")
    ax.bar(positions, [l["kept"] for l in layers], color="#1f77b4", label="kept")
    ax.set_xticks(list(positions), [l["name"] for l in layers], rotation=90, fontsize=7)
    ax.set_ylabel("units (channels, neurons or heads)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def layer_share_plot(layers: list[dict], path: Path, title: str) -> None:
    """Each layer's share of the MACs against its share of the time, dense above and pruned below: where
    the time share outgrows the MACs share, removing MACs there buys little."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.18 * len(layers) + 2), 6), sharex=True)
    positions = range(len(layers))
    for variant, ax in enumerate(axes):
        macs = [l["macs"][variant] for l in layers]
        ms = [l["ms"][variant] for l in layers]
        total_macs, total_ms = max(sum(macs), 1), max(sum(ms), 1e-9)
        ax.bar([p - 0.2 for p in positions], [100 * m / total_macs for m in macs], 0.4, color="#7f7f7f", label="MACs share")
        ax.bar([p + 0.2 for p in positions], [100 * t / total_ms for t in ms], 0.4, color="#1f77b4", label="time share")
        ax.set_ylabel(f"{('dense', 'pruned')[variant]}: % of the layers")
        ax.legend(loc="upper right")
    axes[-1].set_xticks(list(positions), [l["layer"] for l in layers], rotation=90, fontsize=6)
    axes[0].set_title(f"{title}: MACs share vs time share per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sensitivity_plot(groups: dict[str, dict], path: Path, model: str) -> None:
    """Each group's measured curve (divergence against the fraction of its units kept), the chosen width marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("viridis")
    for index, entry in enumerate(groups.values()):
        widths = sorted(int(w) for w in entry["curve"])
        size = widths[-1]
        colour = colours(index / max(len(groups) - 1, 1))
        ax.plot([w / size for w in widths], [entry["curve"][str(w)] for w in widths], color=colour, lw=1, alpha=0.8)
        if entry.get("kept") is not None:
            chosen = min(widths, key=lambda w: abs(w - entry["kept"]))
            ax.plot([entry["kept"] / size], [entry["curve"][str(chosen)]], "o", color=colour, ms=4)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("fraction of the group's units kept (dot: the width allocated)")
    ax.set_ylabel("KL divergence from the dense outputs")
    ax.set_title(f"{model}: sensitivity per group ({len(groups)} groups)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
