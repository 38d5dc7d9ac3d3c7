"""Reward against KL(π ‖ π_ref) of language runs beside Best-of-N's front, as an inline SVG.

A run's per-update ``reward`` and ``kl`` are noisy, so its path is their running
mean over w = max(1, rows // 10) updates (as the run's own ``reward_vs_kl.png``):
m_j = (1/w) Σ_{i=j}^{j+w-1} v_i, drawn from the first point to the last (≤ 300
points). Best-of-N of the reference is read from the run's ``bon_frontier.json``
(written by BOND runs): one point per N at (``kl_estimate``, ``reward``), and the
same rewards at the analytic bound KL ≤ log N − (N−1)/N as a dashed line. Fronts can
also come from files given with ``seedrl report --bon PATH`` (:func:`~seedrl.report.html.rundata.load_bon`:
a ``bon_frontier.json`` or ``benchmarks/results/bond_fronts.json``). Without any, only the
runs' paths are drawn (and the panel says so).
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np

from seedrl.report.html.rundata import Run

W, H = 600, 330
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 12, 40


def running_mean(v: np.ndarray, window: int) -> np.ndarray:
    """Means of ``window`` consecutive values ('valid' part only)."""
    return np.convolve(v, np.ones(window) / window, mode="valid")


def run_path(run: Run, max_points: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """The run's (kl, reward) running-mean path over the rows that have both."""
    kl, reward = run.columns["kl"], run.columns["reward"]
    ok = np.isfinite(kl) & np.isfinite(reward)
    kl, reward = kl[ok], reward[ok]
    if not len(kl):
        return kl, reward
    w = max(1, len(kl) // 10)
    kl, reward = running_mean(kl, w), running_mean(reward, w)
    step = max(1, int(np.ceil(len(kl) / max_points)))
    keep = np.unique(np.r_[np.arange(0, len(kl), step), len(kl) - 1])
    return kl[keep], reward[keep]


def front_svg(runs: list[Run], extra: Sequence[tuple[str, list[dict]]] = ()) -> str:
    """``<figure>`` with the runs' paths and every Best-of-N front (markers) and bound (dashed): the runs' own
    and ``extra`` ones, ``(label, rows)`` from ``--bon`` files."""
    from seedrl.report.html.page import PALETTE

    paths = [(r, *run_path(r)) for r in runs]
    fronts = [(f"{r.name}'s reference", r.frontier) for r in runs if r.frontier] + [(n, rows) for n, rows in extra if rows]
    xs = [v for _, k, _ in paths for v in k.tolist()]
    ys = [v for _, _, rw in paths for v in rw.tolist()]
    for _, rows in fronts:
        xs += [float(p["kl_estimate"]) for p in rows] + [float(p["kl_bound"]) for p in rows]
        ys += [float(p["reward"]) for p in rows]
    if not xs:
        return ""
    x0, x1 = min(min(xs), 0.0), max(xs)
    y0, y1 = min(ys), max(ys)
    x1 = x1 if x1 > x0 else x0 + 1.0
    y0, y1 = (y0, y1) if y1 > y0 else (y0 - 0.5, y1 + 0.5)

    def px(x: float, y: float) -> str:
        return (f"{LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT):.1f},"
                f"{H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM):.1f}")

    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" id="front-svg" role="img">',
             f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="none" stroke="#ccc"/>',
             f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle" font-size="12">KL(π ‖ π_ref)</text>',
             f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle" font-size="12">reward</text>']
    for v, anchor, at in ((x0, "start", (LEFT, H - BOTTOM + 14)), (x1, "end", (W - RIGHT, H - BOTTOM + 14))):
        parts.append(f'<text x="{at[0]}" y="{at[1]}" text-anchor="{anchor}" font-size="11">{v:.3g}</text>')
    for v, at in ((y0, H - BOTTOM), (y1, TOP + 10)):
        parts.append(f'<text x="{LEFT - 4}" y="{at}" text-anchor="end" font-size="11">{v:.3g}</text>')
    legend = []
    for i, (r, kl, rw) in enumerate(paths):
        color = PALETTE[i % len(PALETTE)]
        if len(kl):
            pts = " ".join(px(a, b) for a, b in zip(kl.tolist(), rw.tolist()))
            parts.append(f'<polyline class="run-path" data-run="{esc(r.name)}" points="{pts}" fill="none" '
                         f'stroke="{color}" stroke-width="1.6"/>')
            legend.append((color, f"{r.name} (running mean)", ""))
    for i, (source, rows) in enumerate(fronts):
        color = "#444" if len(fronts) == 1 else PALETTE[(i + 3) % len(PALETTE)]
        rows = sorted(rows, key=lambda p: p["n"])
        bound = " ".join(px(float(p["kl_bound"]), float(p["reward"])) for p in rows)
        parts.append(f'<polyline class="bon-bound" points="{bound}" fill="none" stroke="{color}" stroke-dasharray="4 3"/>')
        est = " ".join(px(float(p["kl_estimate"]), float(p["reward"])) for p in rows)
        parts.append(f'<polyline class="bon-front" points="{est}" fill="none" stroke="{color}"/>')
        for p in rows:
            cx, cy = px(float(p["kl_estimate"]), float(p["reward"])).split(",")
            parts.append(f'<circle class="bon-point" data-n="{int(p["n"])}" cx="{cx}" cy="{cy}" r="3" fill="{color}">'
                         f'<title>N={int(p["n"])}: reward {float(p["reward"]):.4g}, KL {float(p["kl_estimate"]):.4g}</title></circle>')
        legend.append((color, f"Best-of-N of {source} (dashed: log N − (N−1)/N)", ""))
    for j, (color, text, _) in enumerate(legend):
        parts.append(f'<text x="{LEFT + 6}" y="{TOP + 14 + 14 * j}" font-size="11" fill="{color}">{esc(text)}</text>')
    parts.append("</svg>")
    note = "" if fronts else ('<p class="note">No run here has a bon_frontier.json (BOND runs write one) and no --bon '
                              'file was given: only the policies are drawn.</p>')
    return f'<figure><h3>Reward vs KL</h3>{"".join(parts)}{note}</figure>'
