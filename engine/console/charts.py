"""Server-side SVG charts drawn by matplotlib (object API, no pyplot state, so it is safe
from several request threads): a tenant's AUC and logloss per night, and the histogram of
shadow-minus-production score differences.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from registry.types import ModelVersion

__all__ = ["diff_histogram_svg", "metrics_svg"]

_RC: Any = {"svg.fonttype": "none",  # text stays text: smaller, selectable, searchable
       "svg.hashsalt": "tenantry-console",  # stable element ids between renders
       "font.size": 9.0}
_AUC, _LOGLOSS = "#1f77b4", "#d62728"


def _svg(fig: Figure) -> bytes:
    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    return buf.getvalue()


def metrics_svg(versions: Sequence[ModelVersion], production: int | None = None) -> bytes:
    """AUC (left axis) and logloss (right axis) of each version by its data date.

    Args:
        versions: the tenant's versions (any order).
        production: the production version, marked with a ring.

    Returns:
        an SVG document.
    """
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.0, 2.8))
        ax = fig.add_subplot()
        ordered = sorted(versions, key=lambda m: m.version)
        labels = [m.data_date or f"{m.created_at:%Y-%m-%d}" for m in ordered]
        x = np.arange(len(ordered))
        auc = np.array([_value(m, "auc") for m in ordered], dtype=float)
        loss = np.array([_value(m, "logloss") for m in ordered], dtype=float)
        ax.plot(x, auc, marker="o", color=_AUC, label="AUC")
        ax.set_ylabel("AUC (holdout)", color=_AUC)
        ax.tick_params(axis="y", labelcolor=_AUC)
        ax2 = ax.twinx()
        ax2.plot(x, loss, marker="s", linestyle="--", color=_LOGLOSS, label="logloss")
        ax2.set_ylabel("logloss", color=_LOGLOSS)
        ax2.tick_params(axis="y", labelcolor=_LOGLOSS)
        for i, m in enumerate(ordered):
            if m.version == production and np.isfinite(auc[i]):
                ax.plot([i], [auc[i]], marker="o", markersize=13, markerfacecolor="none",
                        markeredgecolor="black", label="production")
        step = max(1, len(ordered) // 10)
        ax.set_xticks(x[::step], [f"v{m.version}\n{lbl}" for m, lbl in
                                  zip(ordered[::step], labels[::step])])
        if not np.isfinite(auc).any() and not np.isfinite(loss).any():
            ax.text(0.5, 0.5, "no metrics recorded", transform=ax.transAxes, ha="center")
        ax.set_title("Holdout metrics per nightly version")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper center",
                  bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
        return _svg(fig)


def _value(mv: ModelVersion, name: str) -> float:
    value = mv.metrics.get(name)
    return float(value) if isinstance(value, int | float) else float("nan")


def diff_histogram_svg(diffs: np.ndarray, production: int | None,
                       shadow: int | None) -> bytes:
    """Histogram of shadow - production scores for one version pair.

    Returns:
        an SVG document (with a note when there are no pairs).
    """
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.0, 2.6))
        ax = fig.add_subplot()
        values = np.asarray(diffs, dtype=float)
        values = values[np.isfinite(values)]
        if len(values):
            bound = max(float(np.max(np.abs(values))), 1e-6)
            ax.hist(values, bins=list(np.linspace(-bound, bound, 41)), color="#6a51a3")
            ax.axvline(0.0, color="black", linewidth=0.8)
            ax.axvline(float(values.mean()), color="#d62728", linestyle="--",
                       label=f"mean {values.mean():+.4f}")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no compared pairs yet", transform=ax.transAxes, ha="center")
        ax.set_xlabel(f"shadow v{shadow} − production v{production} (predicted probability)")
        ax.set_ylabel("pairs")
        ax.set_title(f"Score differences over {len(values)} pairs")
        ax.grid(alpha=0.3)
        return _svg(fig)
