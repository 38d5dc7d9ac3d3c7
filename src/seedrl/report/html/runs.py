"""The run panels of ``seedrl report``: runs, config diff, learning curves, throughput, language-run reward/KL.

Each panel is a :class:`~seedrl.report.html.page.Section`. Curves are drawn by
``seedrl.curves(id)`` of ``assets/page.js`` with uPlot from the section data::

    {"axes": [...], "charts": [{"key": k, "series": [S, ...]}, ...]}

where a single run's series is ``{"label", "color", "x": {axis: [...]}, "y": [...]}``
(one downsampled choice of rows serves every axis) and a seed group's is
``{"label", "color", "agg": {axis: {"x", "y", "lo", "hi"}}}`` (mean and min/max band,
computed per axis by :func:`~seedrl.report.html.rundata.aggregate`). Numbers are
rounded to 7 significant digits to keep the page small.
"""

from __future__ import annotations

import html
import json
import os

import numpy as np

from seedrl.report.html.lm_front import front_svg
from seedrl.report.html.page import Section
from seedrl.report.html.rundata import (
    X_AXES,
    Run,
    aggregate,
    config_diff,
    group_runs,
    load_runs,
    minmax_indices,
)

__all__ = ["load_runs", "run_sections"]

AXIS_LABELS = {"frames": "frames", "updates": "updates", "elapsed_s": "wall time (s)"}
COUNTERS = {"frames", "updates", "episodes", "resumes", "time", "elapsed_s"}
THROUGHPUT = ("fps", "samples_per_s", "policy_lag", "inference_batch", "actor_restarts")
LANGUAGE = ("reward", "kl")
FIRST = ("episode_return", "reward", "kl", "loss", "entropy")


def _r(values: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(f"{v:.7g}") for v in np.asarray(values, float).tolist()]


def _single(run: Run, key: str, color: int, max_points: int) -> dict | None:
    y = run.columns.get(key)
    if y is None:
        return None
    idx = minmax_indices(y, max_points)
    if not len(idx):
        return None
    xs = {a: _r(run.columns[a][idx]) for a in X_AXES if a in run.columns}
    return {"label": run.name, "color": color, "x": xs, "y": _r(y[idx])}


def _group(runs: list[Run], key: str, color: int, max_points: int) -> dict | None:
    agg = {}
    for axis in X_AXES:
        if not all(axis in r.columns and key in r.columns for r in runs):
            continue
        x, mean, lo, hi = aggregate([(r.columns[axis], r.columns[key]) for r in runs])
        if not len(x):
            continue
        idx = np.unique(np.concatenate([minmax_indices(v, max(4, max_points // 3)) for v in (mean, lo, hi)]))
        agg[axis] = {"x": _r(x[idx]), "y": _r(mean[idx]), "lo": _r(lo[idx]), "hi": _r(hi[idx])}
    if not agg:
        return None
    label = group_label([str(r.config.get("name") or r.name) for r in runs])
    return {"label": f"{label} (mean of {len(runs)} seeds, min/max band)",
            "color": color, "agg": agg}


def group_label(names: list[str]) -> str:
    """The runs' one config name, or their names' common prefix without a trailing seed marker
    (``cp_s0``, ``cp_s1`` -> ``cp``), else the first name."""
    if len(set(names)) == 1:
        return names[0]
    prefix = os.path.commonprefix(names).rstrip("_-. ")
    for tail in ("_s", "-s", "_seed", "-seed", "seed"):
        if prefix.endswith(tail):
            prefix = prefix[: -len(tail)].rstrip("_-. ")
    return prefix or names[0]


def curve_data(runs: list[Run], keys: list[str], max_points: int) -> dict:
    """The data of a curves section: for every key, one series per single run or per seed group."""
    groups = group_runs(runs)
    charts = []
    for key in keys:
        series = []
        for color, members in enumerate(groups):
            have = [runs[i] for i in members if key in runs[i].columns and np.isfinite(runs[i].columns[key]).any()]
            if not have:
                continue
            s = _single(have[0], key, color, max_points) if len(have) == 1 else _group(have, key, color, max_points)
            if s is not None:
                series.append(s)
        if series:
            charts.append({"key": key, "series": series})
    axes = [a for a in X_AXES if any(a in r.columns for r in runs)]
    return {"axes": axes, "labels": {a: AXIS_LABELS[a] for a in axes}, "charts": charts}


def _numeric_keys(runs: list[Run]) -> list[str]:
    keys: dict[str, None] = {}
    for r in runs:
        for k, col in r.columns.items():
            if np.isfinite(col).any():
                keys[k] = None
    first = [k for k in FIRST if k in keys]
    return first + [k for k in keys if k not in first]


def _is_language(run: Run) -> bool:
    return all(k in run.columns and np.isfinite(run.columns[k]).any() for k in LANGUAGE)


def runs_section(runs: list[Run]) -> Section:
    groups = group_runs(runs)
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    rows = []
    for i, r in enumerate(runs):
        last = {a: r.columns[a][-1] for a in X_AXES if a in r.columns and r.rows}
        rows.append("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}</tr>".format(
            html.escape(r.name), html.escape(str(r.path)), r.rows, group_of[i] + 1,
            "".join(f"<td>{html.escape(f'{last[a]:.6g}') if a in last and np.isfinite(last[a]) else ''}</td>"
                    for a in X_AXES)))
    head = "".join(f"<th>last {AXIS_LABELS[a]}</th>" for a in X_AXES)
    body = (f'<table class="cfg"><tr><th>run</th><th>folder</th><th>rows</th><th>config group</th>{head}</tr>'
            + "".join(rows) + "</table>"
            + '<p class="note">Runs whose configs are equal except name, out_dir and seeds form one config group; '
              "a group of several seeds is drawn as the mean with a min/max band.</p>")
    return Section("runs", "Runs", body, {"runs": [r.name for r in runs], "groups": groups})


def config_section(runs: list[Run]) -> Section:
    diff = config_diff([r.config for r in runs])
    esc = html.escape
    head = "".join(f"<th>{esc(r.name)}</th>" for r in runs)
    rows = []
    for key, vals, differs in diff:
        cells = "".join(f"<td>{esc(json.dumps(v, default=str)) if v is not None else '<i>absent</i>'}</td>" for v in vals)
        rows.append(f'<tr class="{"differs" if differs else "same"}" data-key="{esc(key)}"><td>{esc(key)}</td>{cells}</tr>')
    n = sum(d for _, _, d in diff)
    checked = " checked" if n and len(runs) > 1 else ""
    body = (f'<div class="controls"><label><input type="checkbox" id="cfg-only-diff"{checked}> only the {n} keys that '
            f'differ (of {len(diff)})</label></div><table class="cfg" id="cfg-table"><tr><th>key</th>{head}</tr>'
            f'{"".join(rows)}</table>')
    script = """
var box = document.getElementById("cfg-only-diff");
function apply() {
  document.querySelectorAll("#cfg-table tr.same").forEach(function (tr) { tr.style.display = box.checked ? "none" : ""; });
}
box.addEventListener("change", apply);
apply();"""
    return Section("config", "Config and its diff", body, {"differs": [k for k, _, d in diff if d]}, script=script)


def _curves_section(sid: str, title: str, runs: list[Run], keys: list[str], max_points: int,
                    extra_html: str = "", switch: bool = False) -> Section | None:
    data = curve_data(runs, keys, max_points)
    if not data["charts"]:
        return None
    controls = ""
    if switch:
        radios = "".join(
            f'<label><input type="radio" name="xaxis" value="{a}"{" checked" if i == 0 else ""}> {data["labels"][a]}</label>'
            for i, a in enumerate(data["axes"]))
        controls = f'<div class="controls" id="xaxis-switch">x-axis: {radios}</div>'
    body = f'{controls}<div class="charts" id="charts-{sid}"></div>{extra_html}'
    return Section(sid, title, body, data, script=f'seedrl.curves("{sid}");')


def run_sections(runs: list[Run], max_points: int = 2000, bon: list[tuple[str, list[dict]]] = ()) -> list[Section]:
    """Runs, config diff, learning curves (with the x-axis switch), throughput, and language runs' reward/KL
    (``bon``: extra Best-of-N fronts ``(label, rows)`` for the reward-vs-KL figure)."""
    keys = _numeric_keys(runs)
    language = [r for r in runs if _is_language(r)]
    throughput = [k for k in THROUGHPUT if k in keys]
    learning = [k for k in keys if k not in COUNTERS and k not in throughput and not (language and k in LANGUAGE)]
    sections = [runs_section(runs), config_section(runs)]
    for s in (
        _curves_section("curves", "Learning curves", runs, learning, max_points, switch=True),
        _curves_section("throughput", "Throughput, policy lag, inference batch", runs, throughput, max_points),
        _curves_section("language", "Language runs: reward, KL and the reward-vs-KL front", language, list(LANGUAGE),
                        max_points, extra_html=front_svg(language, bon)) if language else None,
    ):
        if s is not None:
            sections.append(s)
    return sections
