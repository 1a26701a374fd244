"""Which finished strategy to recommend, and why, in words that say how sure it is.

The cheapest strategy is recommended among those whose quality is within the task's material
difference of the best, or that the test split cannot tell apart from the best: on 40 test rows a
gap of 0.05 macro-F1 is noise, and the cheaper strategy is then the better buy (said as such).
"Cannot tell apart" is a paired bootstrap of the difference on the same test rows when the rows
carry their predictions (a comparison run by the engine), else overlapping intervals (a comparison
assembled from finished jobs).
"""

from __future__ import annotations


def indistinguishable(task, best: dict, other: dict) -> tuple[bool, str]:
    """(cannot be told apart, how that was judged)."""
    diff = task.difference(best, other)
    if diff is not None and diff.get("interval"):
        lo, hi = diff["interval"]
        return lo <= 0.0, (f"difference {diff['difference']:+.3f}, 95% interval {lo:+.3f} to {hi:+.3f} "
                           f"on {diff.get('rows', '?')} paired test rows")
    b, o = best.get("quality_interval"), other.get("quality_interval")
    if b and o:
        return o[1] >= b[0], f"95% intervals {o[0]:.3f}–{o[1]:.3f} and {b[0]:.3f}–{b[1]:.3f} overlap" \
            if o[1] >= b[0] else "their 95% intervals do not overlap"
    return False, ""


def recommend(rows: list[dict], task) -> tuple[str | None, str]:
    done = [r for r in rows if "error" not in r]
    if not done:
        return None, "no strategy finished"
    label, material = task.quality_label, task.material
    best = max(done, key=lambda r: r["quality"])
    close, tied = [], {}
    for r in done:
        if r is best or r["quality"] >= best["quality"] - material:
            close.append(r)
            continue
        same, how = indistinguishable(task, best, r)
        if same:
            close.append(r)
            tied[r["strategy"]] = how
    pick = min(close, key=lambda r: r["cost_seconds"])
    others = sorted((r for r in done if r is not best), key=lambda r: -r["quality"])
    if pick is best:
        gap = best["quality"] - others[0]["quality"] if others else 0.0
        reason = (f"{pick['strategy']} has the best {label} ({pick['quality']:.3f})"
                  + (f", {gap:.3f} ahead of the next" if others else "")
                  + f" and no cheaper strategy comes within {material:.2f} of it.")
        if others:
            same, how = indistinguishable(task, best, others[0])
            if same and gap > material:
                reason += (f" {others[0]['strategy']} cannot be told apart from it on this test split "
                           f"({how}), but it costs more.")
        return pick["strategy"], reason
    ratio = best["cost_seconds"] / max(pick["cost_seconds"], 1e-9)
    if pick["strategy"] in tied:
        return pick["strategy"], (f"{pick['strategy']} ({label} {pick['quality']:.3f}) and the best, "
                                  f"{best['strategy']} ({best['quality']:.3f}), cannot be told apart on "
                                  f"{best.get('test_rows') or 'these'} test rows ({tied[pick['strategy']]}): "
                                  f"recommending the cheaper, at {ratio:.1f}x less compute. More test rows "
                                  f"would tell them apart.")
    return pick["strategy"], (f"{pick['strategy']} reaches {label} {pick['quality']:.3f}, within "
                              f"{material:.2f} of the best ({best['strategy']}, {best['quality']:.3f}), "
                              f"at {ratio:.1f}x less compute.")
