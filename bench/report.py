"""The benchmark's readable table (Markdown) and chart (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SEED_TARGETS = {"ES→S3 slices=1": 15_000 / 60, "S3→ES": 8_000 / 60}


def table(out: dict[str, Any]) -> str:
    lines = [
        f"Benchmark of {out['when']} on {out['machine']['cpus']} CPUs, Python {out['machine']['python']}: "
        f"{out['docs']:,} docs of ~1 KB, median of {out['reps']} runs, servers in their own processes.",
        "",
        "| job | Sluice docs/s | floor docs/s | ratio (target) | CPU µs/doc | peak RSS MB | floor |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, r in out["results"].items():
        if key == "memory":
            continue
        s, f = r["sluice"], r["floor"]
        target = f" (≥ {r['target_ratio']})" if r["target_ratio"] else ""
        ratio = f"{r['ratio']:.2f}x{target}" if r["ratio"] else "-"
        floor = f"{f['docs_per_s']:,.0f}" if f else "-"
        lines.append(f"| {key} | {s['docs_per_s']:,.0f} | {floor} | {ratio} | {s['cpu_us_per_doc']:.0f} | "
                     f"{s['max_rss_mb']:.0f} | {r['note']} |")
    mem = out["results"].get("memory")
    if mem:
        peaks = ", ".join(f"{rss:.0f} MB at {n:,} docs" for n, rss in zip(mem["docs"], mem["max_rss_mb"], strict=True))
        lines += ["", f"Peak RSS of the Sluice process (ES→S3, default settings): {peaks} "
                  f"(target ≤ {mem['target_mb']} MB, flat in input size)."]
    lines += ["", "Seed targets: ES→S3 ≥ 15,000 docs/min (250/s), S3→ES ≥ 8,000 docs/min (133/s) on one worker."]
    return "\n".join(lines) + "\n"


def chart(out: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [(k, r) for k, r in out["results"].items() if k != "memory"]
    names = [k for k, _ in rows]
    sluice = [r["sluice"]["docs_per_s"] for _, r in rows]
    floor = [r["floor"]["docs_per_s"] if r["floor"] else 0 for _, r in rows]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], sluice, width=0.4, label="Sluice", color="#2b6cb0")
    ax.bar([x + 0.2 for x in xs], floor, width=0.4, label="floor (plain script, same clients)", color="#a0aec0")
    ax.set_xticks(list(xs), names, rotation=15, ha="right")
    ax.set_ylabel("docs/s (median)")
    ax.set_title(f"Sluice throughput, {out['docs']:,} docs of ~1 KB, {out['machine']['cpus']} CPUs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
