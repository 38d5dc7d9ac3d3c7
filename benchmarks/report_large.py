"""Large runs in ``seedrl report``: reading a ``--rows``-row ``metrics.jsonl`` and building the page.

Writes a run folder of ``--rows`` rows of 18 keys (the shape of an IMPALA run's rows: counters,
losses, throughput; ``episode_return`` on one row in three), then times, once each (medians of
``--repeats``): the Arrow JSON reader (:func:`rundata._arrow_columns`, the default), the row-by-row
reader (:func:`rundata._python_columns`, the fallback) and the whole page (read + curves downsampled to
``--max-points`` + HTML). Also the page's size and the points per curve. With ``--episodes N``
(default 10⁴) it also writes a dataset of N CartPole-shaped episodes (20 to 200 steps of a 4-float
observation) and times the episode browser's section (summaries of all, detail of the first 8) and its size.
Results: ``benchmarks/results/report_large.json``.

    python benchmarks/report_large.py --rows 1000000 --episodes 10000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import seedrl.report.html.rundata as rd
from seedrl.report.html.page import build_page
from seedrl.report.html.runs import load_runs, run_sections

KEYS = ("loss", "pg_loss", "baseline_loss", "entropy", "grad_norm", "lr", "policy_lag", "fps", "inference_batch",
        "queue_fill", "actor_restarts", "learner_wait_s", "episodes")


def write_run(path: Path, rows: int, seed: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text("name: big\nseed: 0\n")
    rng = np.random.default_rng(seed)
    with open(path / "metrics.jsonl", "w") as fh:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            i = np.arange(start, start + n)
            vals = rng.normal(size=(n, len(KEYS)))
            for j in range(n):
                row = {"frames": int(i[j]) * 640, "updates": int(i[j]), "elapsed_s": round(i[j] * 0.01, 3)}
                row.update(zip(KEYS, vals[j].round(6).tolist()))
                if i[j] % 3 == 0:
                    row["episode_return"] = round(float(i[j]) / rows * 500, 3)
                fh.write(json.dumps(row) + "\n")
    return path


def write_episodes(path: Path, episodes: int, seed: int = 0) -> Path:
    from seedrl.data import DatasetWriter

    rng = np.random.default_rng(seed)
    with DatasetWriter(path) as w:
        for e in range(episodes):
            n = int(rng.integers(20, 201))
            flags = np.zeros(n, bool)
            first, last = flags.copy(), flags.copy()
            first[0] = last[-1] = True
            w.write_episode([{"observation": o, "action": np.int64(a), "reward": np.float32(1.0),
                              "discount": np.float32(1.0), "is_first": bool(f), "is_last": bool(l), "is_terminal": bool(l)}
                             for o, a, f, l in zip(rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 2, n),
                                                   first, last)], metadata={"agent_id": f"actor-{e % 4}"})
    return path


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def metrics_part(tmp: Path, args) -> dict:
    run = write_run(tmp / "big", args.rows)
    metrics = run / "metrics.jsonl"
    arrow_s, cols = _time(lambda: rd._arrow_columns(metrics.read_bytes()), args.repeats)
    assert cols is not None, "the Arrow reader refused the file"
    python_s, slow = _time(lambda: rd._python_columns(metrics.read_bytes()), args.repeats)
    assert all(np.array_equal(cols[k], slow[k], equal_nan=True) for k in slow) and set(cols) == set(slow)
    page_s, page = _time(lambda: build_page(run_sections(load_runs([run]), max_points=args.max_points), "big"),
                         args.repeats)
    points = max(len(s["y"]) for sec in run_sections(load_runs([run]), max_points=args.max_points)
                 if sec.script.startswith("seedrl.curves") for c in sec.data["charts"] for s in c["series"])
    return {"rows": args.rows, "keys": 3 + len(KEYS) + 1, "file_mb": round(metrics.stat().st_size / 1e6, 1),
            "arrow_read_s": round(arrow_s, 2), "row_reader_s": round(python_s, 2), "page_build_s": round(page_s, 2),
            "page_mb": round(len(page.encode()) / 1e6, 2), "max_points_per_curve": points, "max_points": args.max_points}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="metric rows (0: skip the metrics part)")
    p.add_argument("--max-points", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--episodes", type=int, default=10_000)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "report_large.json"))
    args = p.parse_args()
    result: dict = {"load_average_before": [round(x, 2) for x in os.getloadavg()], "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        if args.rows:
            result.update(metrics_part(Path(tmp), args))
        if args.episodes:
            from seedrl.data import open_dataset
            from seedrl.report.html.episodes import episodes_section

            data = write_episodes(Path(tmp) / "episodes", args.episodes)
            section_s, section = _time(lambda: episodes_section(open_dataset(data), 0), args.repeats)
            html = build_page([section], "episodes")
            result.update(episodes=args.episodes, episode_steps=open_dataset(data).num_steps,
                          episode_section_s=round(section_s, 2), episode_page_mb=round(len(html.encode()) / 1e6, 2))
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
