"""Time to score on Atari: return against wall time and against frames, seedrl and its peers.

Each system trains one game for the same ``--minutes`` of wall time, one after another on this
machine (never two at once), with the preprocessing of ``benchmarks/peers_pong.py`` (84x84 grey,
frame stack 4, frame skip 4, up to 30 no-ops, sticky actions 0.25 where a peer takes them).
The score protocol is the same for every system: the mean undiscounted episode return of the
raw game score over the last 100 finished training episodes, read from the system's own
output and time-stamped here when it appears:

* seedrl (IMPALA and, with ``seedrl:r2d2``, R2D2): ``episode_return`` of ``metrics.jsonl`` rows
  (the mean of the last 100 raw-score episodes, whatever the loss's reward clipping);
* CleanRL ``ppo_atari_envpool.py``: its ``global_step=..., episodic_return=...`` lines (full games:
  the script's episode statistics span lives), averaged here over the last 100;
* Sample Factory APPO: its ``Avg episode reward`` lines (SF's own running mean).

From those curves it reports the wall time and the frames at which each system first reaches the
score thresholds (``--thresholds``, default 0, +10 and +18 on Pong), draws every curve on one plot
(return against minutes and against frames) and, for seedrl, evaluates the final checkpoint on
separate environments (``seedrl eval``, ``--eval-episodes``, sampled actions).

Systems and seeds::

    .venv/bin/python benchmarks/peers_pong.py --setup        # the peer venvs, once
    .venv/bin/python benchmarks/atari_learning.py --systems seedrl,cleanrl,sample-factory --minutes 60 --seeds 0 1
    .venv/bin/python benchmarks/atari_learning.py --systems seedrl:r2d2 --minutes 60 --merge
    .venv/bin/python benchmarks/atari_learning.py --from-run runs/pong_s0 --label seedrl:impala   # an existing run
    .venv/bin/python benchmarks/atari_learning.py --table

``seedrl[:impala]`` runs ``configs/<game>_impala.yaml``, ``seedrl:appo`` ``configs/<game>_appo.yaml``,
``seedrl:r2d2`` ``configs/<game>_r2d2.yaml``
(``--game pong``); ``--set KEY=VALUE`` adds overrides to seedrl runs. Results go to
``benchmarks/results/atari_learning_<game>.json`` and ``docs/images/atari_learning_<game>.png``.
Run it with nothing else heavy on the machine: the 1-minute load average is recorded per system.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peers_pong as pp  # noqa: E402  (the peers' venvs, launches and the measuring loop)

REPO = pp.REPO
RESULTS = REPO / "benchmarks" / "results"
IMAGES = REPO / "docs" / "images"
WINDOW = 100  # episodes in the running mean of every system's score


def _running_mean(window: int = WINDOW):
    recent: collections.deque = collections.deque(maxlen=window)

    def add(value: float) -> float:
        recent.append(value)
        return sum(recent) / len(recent)
    return add


def seedrl_launch(algo: str, game: str, seed: int, run_dir: pathlib.Path, overrides: list[str]) -> pp.Launch:
    config = f"configs/{game}_{algo}.yaml"
    if not (REPO / config).exists():
        raise SystemExit(f"no config {config} for seedrl:{algo} on {game}")
    argv = [str(REPO / ".venv" / "bin" / "seedrl"), "run", config, "name=bench", f"out_dir={run_dir}", f"seed={seed}",
            "total_frames=1_000_000_000", "log.progress=false", "log.every_s=10", *overrides]
    episodes = {"seen": 0}

    def to_sample(r: dict) -> dict:
        row = {"frames": r["frames"]}
        # a new mean only when episodes finished since the last row
        if r.get("episode_return") is not None and r.get("episodes", 0) > episodes["seen"]:
            row["return"] = r["episode_return"]
            episodes["seen"] = r["episodes"]
        return row

    poll = pp.metrics_poller(run_dir / "bench" / "metrics.jsonl", to_sample)

    settings = f"{algo.upper()}; {config}" + (f" + {' '.join(overrides)}" if overrides else "") + f"; seed {seed}"
    name = f"seedrl:{algo}:s{seed}" + (f" [{' '.join(overrides)}]" if overrides else "")  # rows of variants stay apart
    return pp.Launch(name, "seedrl", pp.seedrl_version(), settings, argv, REPO,
                     {**os.environ, "PYTHONUNBUFFERED": "1"}, poll=poll)


_CLEANRL_RETURN = re.compile(r"global_step=(\d+), episodic_return=\[?(-?[\d.]+)")
_SF_RETURN = re.compile(r"Avg episode reward: \[\(0, '(-?[\d.]+)'\)\]")


def with_returns(launch: pp.Launch) -> pp.Launch:
    """A peer's launch whose line parser also reads the peer's episode returns."""
    counter = launch.parse_line
    mean = _running_mean()
    last = {"frames": 0}

    def parse(line: str) -> dict | None:
        rec = counter(line) if counter else None
        if rec is not None:
            last["frames"] = rec["frames"]
            return rec
        if launch.system.startswith("cleanrl"):
            m = _CLEANRL_RETURN.search(line)
            if m:  # global_step counts agent steps of all envs: x frame skip for frames
                return {"frames": int(m.group(1)) * pp.FRAME_SKIP, "return": mean(float(m.group(2)))}
        else:
            m = _SF_RETURN.search(pp._ANSI.sub("", line))
            if m:  # SF's own running mean; frames from its last counter line
                return {"frames": last["frames"], "return": float(m.group(1))}
        return None

    launch.parse_line = parse
    return launch


def first_reach(curve: list[list[float]], threshold: float) -> dict | None:
    """Minutes and frames of the first point of ``[[t_s, frames, return], ...]`` at or above ``threshold``."""
    for t, frames, ret in curve:
        if ret >= threshold:
            return {"minutes": round(t / 60, 2), "frames": int(frames)}
    return None


_EVAL_LINE = re.compile(r"(\d+) episodes: mean return (-?[\d.]+), min (-?[\d.]+), max (-?[\d.]+)")


def evaluate_seedrl(run_dir: pathlib.Path, episodes: int) -> dict | None:
    """``seedrl eval`` of the run's last checkpoint on fresh environments (sampled actions)."""
    run = run_dir / "bench"
    cmd = [str(REPO / ".venv" / "bin" / "seedrl"), "eval", str(run), "--episodes", str(episodes)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    m = _EVAL_LINE.search(res.stdout)
    if res.returncode != 0 or m is None:
        return {"command": " ".join(cmd), "error": (res.stderr.strip().splitlines() or ["no result line"])[-1]}
    return {"command": " ".join(cmd), "episodes": int(m.group(1)), "mean_return": float(m.group(2)),
            "min_return": float(m.group(3)), "max_return": float(m.group(4))}


def curve_from_run(run: pathlib.Path) -> list[list[float]]:
    """``[[t_s, frames, return]]`` from an existing seedrl run's metrics.jsonl (t from its elapsed_s)."""
    curve, episodes = [], 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("episode_return") is not None and r.get("episodes", 0) > episodes:
            curve.append([r.get("elapsed_s", 0.0), r["frames"], r["episode_return"]])
            episodes = r["episodes"]
    return curve


def summarize(row: dict, thresholds: list[float]) -> dict:
    curve = row["curve"]
    row["reached"] = {str(th): first_reach(curve, th) for th in thresholds}
    row["final_return"] = curve[-1][2] if curve else None
    row["best_return"] = max((c[2] for c in curve), default=None)
    if curve:  # rows read from an existing run have no launch counters
        row.setdefault("total_frames_seen", int(curve[-1][1]))
        row.setdefault("minutes", round(curve[-1][0] / 60, 1))
    return row


def plot(rows: list[dict], game: str, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for row in rows:
        if not row["curve"]:
            continue
        t, f, r = zip(*row["curve"])
        ax_t.plot([x / 60 for x in t], r, label=row["name"])
        ax_f.plot([x / 1e6 for x in f], r, label=row["name"])
    ax_t.set_xlabel("wall time (minutes)")
    ax_f.set_xlabel("frames (millions)")
    ax_t.set_ylabel(f"mean return of the last {WINDOW} episodes")
    for ax in (ax_t, ax_f):
        ax.grid(alpha=0.3)
    ax_f.legend(fontsize=8)
    fig.suptitle(f"{game}: time to score on {os.cpu_count()} CPU cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt_table(rows: list[dict], thresholds: list[float]) -> str:
    head = "| system | minutes | frames | load (start -> end) | " + " | ".join(f"to {th:+g}: min / Mframes" for th in thresholds) + \
        " | final | best |"
    lines = [head, "|" + " --- |" * (6 + len(thresholds))]
    for r in rows:
        cells = []
        for th in thresholds:
            hit = first_reach(r["curve"], th)  # from the curve: any threshold, not only those of its run
            cells.append(f"{hit['minutes']} / {hit['frames'] / 1e6:.1f}" if hit else "not reached")
        la = r.get("load_avg_1min", {})
        load = f"{la.get('launch', float('nan')):.2f} -> {la.get('end', float('nan')):.2f}" if la else "n/a"
        fin = f"{r['final_return']:.1f}" if r["final_return"] is not None else "n/a"
        best = f"{r['best_return']:.1f}" if r["best_return"] is not None else "n/a"
        lines.append(f"| {r['name']} | {r.get('minutes', 'n/a')} | {r.get('total_frames_seen', 0) / 1e6:.1f}M | {load} | "
                     + " | ".join(cells) + f" | {fin} | {best} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="pong")
    parser.add_argument("--systems", default="seedrl", help="comma list: seedrl[:impala|:appo|:r2d2], cleanrl, sample-factory")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the seedrl runs")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall time each system trains")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 10.0, 18.0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for seedrl runs")
    parser.add_argument("--eval-episodes", type=int, default=10, help="seedrl: episodes of `seedrl eval` at the end (0: none)")
    parser.add_argument("--workdir", default=os.environ.get("SEEDRL_PEERS_DIR", "/tmp/seedrl-peers"))
    parser.add_argument("--from-run", type=pathlib.Path, help="add the curve of an existing seedrl run directory")
    parser.add_argument("--label", help="name of the --from-run row")
    parser.add_argument("--note", default="", help="free text stored with the rows of this invocation")
    parser.add_argument("--merge", action="store_true", help="keep rows of the results file that this run does not redo")
    parser.add_argument("--table", action="store_true", help="print the table and redraw the plot of the results file")
    parser.add_argument("--keep-runs", action="store_true")
    parser.add_argument("--tag", default="", help="results and plot of a separate study: atari_learning_<game>_<tag>.json")
    args = parser.parse_args()
    stem = f"atari_learning_{args.game}" + (f"_{args.tag}" if args.tag else "")
    out = RESULTS / f"{stem}.json"
    image = IMAGES / f"{stem}.png"
    workdir = pathlib.Path(args.workdir).resolve()

    rows: list[dict] = []
    if args.from_run is not None:
        rows.append(summarize({"name": args.label or f"seedrl:{args.from_run.name}", "system": "seedrl",
                               "source": str(args.from_run), "note": args.note,
                               "curve": curve_from_run(args.from_run)}, args.thresholds))
    elif not args.table:
        log_dir = workdir / "logs" / time.strftime("atari-%Y%m%d-%H%M%S")
        for name in [s for s in args.systems.split(",") if s]:
            system, _, algo = name.partition(":")
            seeds = args.seeds if system == "seedrl" else [None]
            for seed in seeds:
                (workdir / "runs").mkdir(parents=True, exist_ok=True)
                run_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"{name.replace(':', '_')}-", dir=workdir / "runs"))
                try:
                    if system == "seedrl":
                        launch = seedrl_launch(algo or "impala", args.game, seed, run_dir, args.set)
                    elif args.game == "pong":
                        launch = with_returns(pp.make_launch(name, workdir, run_dir))
                    else:
                        raise SystemExit(f"peers are driven on pong only (got --game {args.game})")
                    result = pp.run_one(launch, args.minutes, 60.0, log_dir)
                    result["curve"] = result.pop("return_samples", [])
                    result["note"] = args.note
                    if system == "seedrl" and args.eval_episodes > 0:
                        result["eval"] = evaluate_seedrl(run_dir, args.eval_episodes)
                    rows.append(summarize(result, args.thresholds))
                finally:
                    if not args.keep_runs:
                        shutil.rmtree(run_dir, ignore_errors=True)

    previous = []
    if (args.merge or args.table) and out.exists():
        names = {r["name"] for r in rows}
        previous = [r for r in json.loads(out.read_text())["rows"] if r["name"] not in names]
    rows = previous + rows
    if rows:
        payload = {"game": args.game, "machine": pp.machine_info(), "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                   "protocol": f"mean raw-score return of the last {WINDOW} training episodes; systems run one at a time",
                   "thresholds": args.thresholds, "rows": rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=1) + "\n")
        plot(rows, args.game, image)
        print(fmt_table(rows, args.thresholds))
        print(f"\nwrote {out} and {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
