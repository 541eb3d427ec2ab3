"""The capacity report: one JSON document (DESIGN.md keys), Markdown, and PNG plots.

Plots use matplotlib's Agg backend (no display needed): latency percentiles vs offered
rate, achieved vs offered rate, server hit rate vs rate, and the LRU hit-ratio curve of
the traffic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from engine.loadtest.capacity import Recommendation, max_within_slo
from engine.loadtest.runner import LoadTestRun

__all__ = ["build_document", "render_markdown", "write_report"]


def _clean(value: Any) -> Any:
    """NaN/inf become None so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def build_document(run: LoadTestRun, recommendation: Recommendation,
                   report_files: list[str]) -> dict[str, Any]:
    """The JSON document printed by ``--json`` and written as ``loadtest.json``."""
    cfg = run.config
    curve = run.curve
    sizes = sorted({0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
                    curve.distinct_keys} & set(range(curve.distinct_keys + 1)))
    doc = {
        "stages": [s.to_dict() for s in run.stages],
        "max_rps_within_slo": max_within_slo(run.stages),
        "lower_bound": recommendation.lower_bound,
        "slo_p99_ms": cfg.slo_p99_ms,
        "recommendation": recommendation.to_dict(),
        "report_files": report_files,
        "url": cfg.url,
        "protocol": cfg.protocol.value,
        "tenants": len(cfg.tenants),
        "zipf_s": cfg.zipf_s,
        "cold_fraction": cfg.cold_fraction,
        "workers": cfg.workers,
        "hold_s": cfg.hold_s,
        "ramp_s": cfg.ramp_s,
        "replicas_seen": run.replicas_seen,
        "mean_model_bytes": run.mean_model_bytes,
        "trace_hit_ratio_curve": {"accesses": curve.accesses, "distinct": curve.distinct_keys,
                                  "points": [[s, round(curve.hit_ratio(s), 5)] for s in sizes]},
        "elapsed_s": round(run.elapsed_s, 2),
        "notes": run.notes + recommendation.notes,
    }
    return _clean(doc)


def render_markdown(doc: dict[str, Any]) -> str:
    """Human-readable report."""
    rec = doc["recommendation"]
    bound = bool(doc.get("lower_bound"))
    lines = [
        "# tenantry capacity report", "",
        (f"Target: `{doc['url']}` — {doc['tenants']} tenants, Zipf({doc['zipf_s']}), "
         f"{doc['workers']} load process(es), {doc['hold_s']} s per stage."), "",
        (f"**Highest rate within SLO (p99 <= {doc['slo_p99_ms']} ms, errors < 0.1%): "
         f"{'at least ' if bound else ''}{doc['max_rps_within_slo']} req/s**"
         + (" — a lower bound: no stage failed the SLO, so the server may sustain more "
            "(test higher --rates to find its limit)." if bound else "")), "",
        ("| offered | achieved | p50 ms | p99 ms | errors | hit rate | loads | evictions "
         "| cache MB | behind (max ms / count) | result |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in doc["stages"]:
        hit = "n/a" if s["hit_rate"] is None else f"{s['hit_rate']:.3f}"
        mb = "n/a" if s["cache_bytes"] is None else f"{s['cache_bytes'] / 2**20:.1f}"
        lines.append(
            f"| {s['offered_rps']:g} | {s['achieved_rps']:.1f} | {s['p50_ms']:.2f} "
            f"| {s['p99_ms']:.2f} | {s['error_rate']:.3%} | {hit} | {s['loads']} "
            f"| {s['evictions']} | {mb} | {s['behind_schedule_max_ms']:.1f} / "
            f"{s['behind_schedule_count']} | {'pass' if s['passed'] else 'FAIL'} |")
    rec = {k: ("n/a" if v is None else v) for k, v in rec.items()}
    replicas = (f"at most {rec['replicas']} replicas** (at least {rec['per_replica_rps']} "
                f"req/s each measured; the replica count is an upper bound)" if bound else
                f"{rec['replicas']} replicas** ({rec['per_replica_rps']} req/s each measured)")
    lines += ["", "## Recommendation", "",
              (f"For **{rec['target_rps']} req/s over {rec['target_tenants']} tenants** with "
               f"{rec['headroom']:.0%} headroom: **{replicas}, cache "
               f"**{rec['cache_mb_per_replica']} MB per replica** "
               f"({rec['cache_models_per_replica']} models; {rec['cache_models_total']} in "
               f"total for hit rate {rec['target_hit_rate']})."), ""]
    lines += [f"- {note}" for note in doc["notes"]]
    lines += ["", "Plots: " + ", ".join(f"`{Path(p).name}`" for p in doc["report_files"]
                                       if p.endswith(".png"))]
    return "\n".join(lines) + "\n"


def _plots(doc: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = sorted(doc["stages"], key=lambda s: s["offered_rps"])
    offered = [s["offered_rps"] for s in stages]
    files = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99")):
        ax.plot(offered, [s[key] for s in stages], marker="o", label=label)
    ax.axhline(doc["slo_p99_ms"], color="red", linestyle="--", label="p99 SLO")
    ax.set(xlabel="offered req/s", ylabel="latency ms (from intended send)", yscale="log",
           title="Latency vs offered rate")
    ax.legend()
    files.append(out / "latency.png")

    fig2, ax2 = plt.subplots(figsize=(6, 4))
    ax2.plot(offered, [s["achieved_rps"] for s in stages], marker="o", label="achieved")
    ax2.plot(offered, offered, linestyle="--", color="grey", label="offered = achieved")
    ax2.set(xlabel="offered req/s", ylabel="achieved req/s", title="Achieved vs offered")
    ax2.legend()
    files.append(out / "throughput.png")

    fig3, ax3 = plt.subplots(figsize=(6, 4))
    hits = [(s["offered_rps"], s["hit_rate"]) for s in stages if s["hit_rate"] is not None]
    ax3.plot([h[0] for h in hits], [h[1] for h in hits], marker="o")
    ax3.set(xlabel="offered req/s", ylabel="cache hit rate", ylim=(0, 1.02),
            title="Server hit rate vs rate" + ("" if hits else " (no /metrics)"))
    files.append(out / "hitrate.png")

    fig4, ax4 = plt.subplots(figsize=(6, 4))
    pts = doc["trace_hit_ratio_curve"]["points"]
    ax4.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
    ax4.set(xlabel="LRU cache size (models)", ylabel="hit ratio", ylim=(0, 1.02),
            title="LRU hit-ratio curve of this trace")
    files.append(out / "hitratio_curve.png")

    for figure, path in zip((fig, fig2, fig3, fig4), files):
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
    return files


def write_report(run: LoadTestRun, recommendation: Recommendation,
                 out_dir: str | Path) -> dict[str, Any]:
    """Write ``loadtest.json``, ``report.md`` and the PNG plots into ``out_dir``.

    Args:
        run: the measured run.
        recommendation: the sizing recommendation.
        out_dir: directory (created if missing).

    Returns:
        the JSON document (its ``report_files`` lists every file written).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ["loadtest.json", "report.md", "latency.png", "throughput.png", "hitrate.png",
             "hitratio_curve.png"]
    doc = build_document(run, recommendation, [str(out / n) for n in names])
    _plots(doc, out)
    (out / "report.md").write_text(render_markdown(doc))
    (out / "loadtest.json").write_text(json.dumps(doc, indent=2))
    return doc
