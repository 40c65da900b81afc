"""Benchmark the population pre-screen (``bridge prescreen DIR``) against a parse-only floor and the naive path.

``python -m benchmarks.bulk_prescreen [N ...] [--workdir /tmp/bridge-bench]`` from the repository root (default
sizes 10000 and 100000) generates one synthetic export per size with ``samplegen.population`` (kept between
runs) and, on that same export, in one run:

1. **parse-only floor** — every line read and parsed with ``orjson.loads``, nothing else; measured in this
   process (1 process) and over a 2-process pool, reading exactly as the bridge's workers do (the same chunk
   plan, a reused buffer, the same malloc setting). The bridge uses every core, so the 2-process floor is the
   stricter one for ratios;
2. **naive path** — every line through the R4B models (``bridge.fhirmodels.parse_resource``), as the
   per-patient path validates every resource it reads. At 100k patients that takes hours, so a systematic
   sample of lines is timed and the per-line cost extrapolated to all lines (single process; halved for two
   processes in the ratio, which flatters the naive path);
3. **bridge** — ``python -m bridge prescreen DIR --format json --site-map samples/site-map.yaml --as-of ...``
   as a subprocess, output to /dev/null. Its peak memory is taken two ways: the largest single process of
   the tree (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` in a wrapper process) and the peak sum over the process
   tree of RSS and of PSS (``/proc/<pid>/smaps_rollup``, polled every 20 ms; PSS counts the pages the forked
   workers share with their parent once).

Wall time depends on what else runs on the machine; CPU time (user + system of the process tree) is printed
beside it. Results go to ``<workdir>/results.json`` and a Markdown table to standard output.

**The grid** (issue #16): ``python -m benchmarks.bulk_prescreen --grid 10000 --rates 0.001 0.01 0.05 --results 10
90 150 [--all-patients] [--repeat 3] [--drop]`` generates one export per (size, leukaemia share, results per
candidate) with ``--results-per-candidate`` and measures, ``--repeat`` times in pairs, the 1-process floor and
``bridge prescreen DIR`` (and with ``--all-patients`` the same command with that flag) one after the other on the
same export, so that both see the same load; it reports the median of the paired ratios bridge / floor (wall and
CPU) and the peak memory of the tree. ``--drop`` deletes each export once measured (a 100k-patient export is
about 8 GB). Results go to ``<workdir>/grid.json`` and a Markdown table to standard output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bridge.errors import InvalidResource
from bridge.fhirmodels import parse_resource
from bridge.ingest.readers import ndjson_files
from bridge.population import plan_chunks, read_chunk_reusing, steady_malloc
from samplegen.population import write_population

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2026-06-15"
SITE_MAP = ROOT / "samples" / "site-map.yaml"


@dataclass
class Measure:
    name: str
    wall: float
    cpu: float
    lines: int
    extrapolated: bool = False
    rss_max_mb: float | None = None
    rss_tree_mb: float | None = None
    pss_tree_mb: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _cpu() -> float:
    self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime


def _parse_chunk(chunk: Any) -> int:
    count = 0
    for line in read_chunk_reusing(chunk).split(b"\n"):
        if line.strip():
            with contextlib.suppress(orjson.JSONDecodeError):
                orjson.loads(line)
            count += 1
    return count


def floor(directory: Path, processes: int) -> Measure:
    """Read and orjson-parse every line; the chunk plan is the bridge's."""
    plan = plan_chunks(ndjson_files(directory))
    started, cpu = time.perf_counter(), _cpu()
    if processes == 1:
        lines = sum(map(_parse_chunk, plan))
    else:  # the bridge's workers' reading: a reused buffer, a fixed malloc mmap threshold
        with multiprocessing.get_context("fork").Pool(processes, initializer=steady_malloc) as pool:
            lines = sum(pool.imap(_parse_chunk, plan))
    return Measure(f"floor ({processes} process{'es' if processes > 1 else ''})", time.perf_counter() - started,
                   _cpu() - cpu, lines)


def naive(directory: Path, total_lines: int, sample: int) -> Measure:
    """orjson + R4B model validation on every k-th line, extrapolated to all lines (one process)."""
    step = max(1, total_lines // sample)
    lines: list[bytes] = []
    index = 0
    for path in ndjson_files(directory):
        with path.open("rb") as handle:
            for line in handle:
                if index % step == 0 and line.strip():
                    lines.append(line)
                index += 1
    started, cpu = time.perf_counter(), _cpu()
    invalid = 0
    for line in lines:
        try:
            parse_resource(orjson.loads(line))
        except (orjson.JSONDecodeError, InvalidResource):
            invalid += 1
    wall, used = time.perf_counter() - started, _cpu() - cpu
    scale = total_lines / len(lines)
    return Measure("naive (R4B every line, 1 process)", wall * scale, used * scale, total_lines, True,
                   notes={"sampled_lines": len(lines), "invalid_in_sample": invalid,
                          "per_line_ms": round(1000 * wall / len(lines), 3)})


_WRAPPER = (
    "import resource, subprocess, sys\n"
    "with open(sys.argv[1], 'wb') as out:\n"
    "    rc = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.PIPE).returncode\n"
    "use = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(use.ru_maxrss, use.ru_utime + use.ru_stime, rc)\n"
)


def _tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        with contextlib.suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return pids


def _kb(path: str, key: str) -> int:
    try:
        for row in Path(path).read_text().splitlines():
            if row.startswith(key):
                return int(row.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """Polls the peak sum of RSS (every ``every`` s) and PSS (every ``pss_every`` polls) over a process tree.

    PSS comes from ``smaps_rollup``, which walks every mapping of the process: read every 20 ms on four processes
    it cost the measured run about a tenth of a core, and the bridge uses both, so its wall time rose by ~10 %
    (measured, issue #16). RSS (``status``) is cheap and stays at 20 ms; PSS is sampled ten times less often.
    """

    def __init__(self, root: int, every: float = 0.02, pss_every: int = 10) -> None:
        super().__init__(daemon=True)
        self.root, self.every, self.pss_every = root, every, pss_every
        self.rss_kb = self.pss_kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        polls = 0
        while not self.done.is_set():
            pids = _tree(self.root)
            rss = sum(_kb(f"/proc/{p}/status", "VmRSS:") for p in pids)
            self.rss_kb = max(self.rss_kb, rss)
            if polls % self.pss_every == 0:
                pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
                self.pss_kb = max(self.pss_kb, pss)
            polls += 1
            self.done.wait(self.every)


def bridge(directory: Path, total_lines: int, output: Path, *extra: str) -> Measure:
    """The CLI as a subprocess; its JSON document goes to ``output`` (counted afterwards, not timed)."""
    cmd = [sys.executable, "-m", "bridge", "prescreen", str(directory), "--format", "json",
           "--site-map", str(SITE_MAP), "--as-of", AS_OF, *extra]
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(output), *cmd], stdout=subprocess.PIPE, cwd=ROOT)
    poll = TreeMemory(proc.pid)
    poll.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    poll.done.set()
    poll.join()
    maxrss_kb, cpu, rc = out.decode().split()
    if int(rc) != 0:
        raise SystemExit(f"bridge prescreen exited with {rc}")
    return Measure(" ".join(("bridge prescreen DIR", *extra)), wall, float(cpu), total_lines,
                   rss_max_mb=int(maxrss_kb) / 1024,
                   rss_tree_mb=poll.rss_kb / 1024, pss_tree_mb=poll.pss_kb / 1024)


def export(workdir: Path, n: int, rate: float) -> Path:
    directory = workdir / f"pop-{n}"
    marker = directory / ".complete"
    if not marker.exists():
        started = time.perf_counter()
        write_population(n, directory, leukemia_rate=rate)
        marker.write_text(f"{time.perf_counter() - started:.1f}\n")
    return directory


def run_size(workdir: Path, n: int, rate: float, sample: int) -> dict[str, Any]:
    directory = export(workdir, n, rate)
    size = sum(p.stat().st_size for p in ndjson_files(directory))
    f1 = floor(directory, 1)
    f2 = floor(directory, 2)
    nv = naive(directory, f1.lines, sample)
    output = workdir / f"prescreen-{n}.json"
    br = bridge(directory, f1.lines, output)
    start = bridge(export(workdir, 10, rate), 0, workdir / "prescreen-10.json")
    start.name = "bridge start-up alone (a 10-patient export)"
    doc = json.loads(output.read_bytes())
    statuses = [r["status"] for r in doc["results"]]
    return {"patients": n, "lines": f1.lines, "bytes": size, "leukemia_rate": rate,
            "reported_patients": len(statuses),
            "statuses": {k: statuses.count(k) for k in sorted(set(statuses))},
            "generate_s": float((directory / ".complete").read_text()),
            "measures": [asdict(m) for m in (f1, f2, nv, br, start)]}


def _row(m: dict[str, Any], patients: int) -> str:
    wall = m["wall"]
    mem = "" if m["rss_max_mb"] is None else \
        f"{m['rss_max_mb']:.0f} / {m['rss_tree_mb']:.0f} / {m['pss_tree_mb']:.0f}"
    star = " (extrapolated)" if m["extrapolated"] else ""
    rates = f"{m['lines'] / wall:,.0f} | {patients / wall:,.0f}" if m["lines"] else "- | -"
    return f"| {m['name']}{star} | {wall:.1f} | {m['cpu']:.1f} | {rates} | {mem} |"


def table(result: dict[str, Any]) -> str:
    ms = {m["name"]: m for m in result["measures"]}
    f1, f2, br = ms["floor (1 process)"], ms["floor (2 processes)"], ms["bridge prescreen DIR"]
    nv = next(m for m in result["measures"] if m["name"].startswith("naive"))
    rows = [f"### {result['patients']:,} patients — {result['lines']:,} lines, {result['bytes'] / 2**20:,.0f} MiB, "
            f"{result['reported_patients']:,} reported",
            "", "| run | wall s | CPU s | lines/s | patients/s | peak MB: max process / tree RSS / tree PSS |",
            "|---|---|---|---|---|---|"]
    rows += [_row(m, result["patients"] if m["lines"] else 0) for m in result["measures"]]
    rows += ["", f"bridge / floor (1 process): {br['wall'] / f1['wall']:.2f} wall; "
             f"bridge / floor (2 processes): {br['wall'] / f2['wall']:.2f} wall, {br['cpu'] / f2['cpu']:.2f} CPU; "
             f"naive / bridge: {nv['wall'] / br['wall']:.0f}x (one process), {nv['wall'] / 2 / br['wall']:.0f}x "
             f"(naive on two processes)"]
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------------ the grid
def grid_export(workdir: Path, n: int, rate: float, results: int) -> Path:
    directory = workdir / f"grid-{n}-{rate:g}-{results}"
    marker = directory / ".complete"
    if not marker.exists():
        started = time.perf_counter()
        write_population(n, directory, leukemia_rate=rate, results_per_candidate=results)
        marker.write_text(f"{time.perf_counter() - started:.1f}\n")
    return directory


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def grid_point(workdir: Path, n: int, rate: float, results: int, repeat: int, all_patients: bool,
               drop: bool) -> dict[str, Any]:
    """One grid point: ``repeat`` pairs (floor, bridge[, bridge --all-patients]) on one export; medians."""
    directory = grid_export(workdir, n, rate, results)
    size = sum(p.stat().st_size for p in ndjson_files(directory))
    runs: dict[str, list[Measure]] = {"floor": [], "population": [], "all": []}
    output = workdir / "grid-output.json"
    for _ in range(repeat):
        f1 = floor(directory, 1)
        runs["floor"].append(f1)
        runs["population"].append(bridge(directory, f1.lines, output))
        reported = sum(1 for _ in json.loads(output.read_bytes())["results"])
        if all_patients:
            runs["all"].append(bridge(directory, f1.lines, output, "--all-patients"))
            everyone = sum(1 for _ in json.loads(output.read_bytes())["results"])
    output.unlink(missing_ok=True)
    point: dict[str, Any] = {"patients": n, "leukemia_rate": rate, "results_per_candidate": results,
                             "bytes": size, "lines": runs["floor"][0].lines, "reported": reported,
                             "load_before": os.getloadavg()}
    for name in ("population", "all"):
        if not runs[name]:
            continue
        pairs = list(zip(runs["floor"], runs[name], strict=True))
        point[name] = {"wall_ratio": _median([b.wall / f.wall for f, b in pairs]),
                       "cpu_ratio": _median([b.cpu / f.cpu for f, b in pairs]),
                       "wall_s": _median([b.wall for b in runs[name]]),
                       "floor_wall_s": _median([f.wall for f in runs["floor"]]),
                       "rss_max_mb": max(b.rss_max_mb or 0 for b in runs[name]),
                       "rss_tree_mb": max(b.rss_tree_mb or 0 for b in runs[name]),
                       "pss_tree_mb": max(b.pss_tree_mb or 0 for b in runs[name]),
                       "runs": [asdict(b) for b in runs[name]]}
    if all_patients:
        point["all"]["reported"] = everyone
    point["floor_runs"] = [asdict(f) for f in runs["floor"]]
    if drop:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()
    return point


def grid_row(point: dict[str, Any], name: str) -> str:
    m = point[name]
    return (f"| {point['patients']:,} | {100 * point['leukemia_rate']:g} % | {point['results_per_candidate']} | "
            f"{'population' if name == 'population' else '--all-patients'} | {m['floor_wall_s']:.1f} | "
            f"{m['wall_s']:.1f} | **{m['wall_ratio']:.2f}** | {m['cpu_ratio']:.2f} | "
            f"{m['rss_max_mb']:.0f} / {m['rss_tree_mb']:.0f} / {m['pss_tree_mb']:.0f} |")


GRID_HEAD = ("| patients | leukaemia | results per candidate | mode | floor s (1 process) | bridge s | "
             "bridge / floor wall (median of pairs) | CPU ratio | peak MB: max process / tree RSS / tree PSS |\n"
             "|---|---|---|---|---|---|---|---|---|")


def grid_main(args: argparse.Namespace) -> int:
    points = []
    print(GRID_HEAD, flush=True)
    for n in args.sizes:
        for rate in args.rates:
            for results in args.results:
                print(f"== {n} patients, {rate:g} leukaemia, {results} results per candidate", file=sys.stderr)
                point = grid_point(args.workdir, n, rate, results, args.repeat, args.all_patients, args.drop)
                points.append(point)
                print(grid_row(point, "population"), flush=True)
                if args.all_patients:
                    print(grid_row(point, "all"), flush=True)
                (args.workdir / "grid.json").write_text(json.dumps({"cpus": os.cpu_count(), "points": points},
                                                                   indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bridge-bench"))
    parser.add_argument("--leukemia-rate", type=float, default=0.03)
    parser.add_argument("--naive-sample", type=int, default=4000, help="lines validated to extrapolate the naive path")
    parser.add_argument("--grid", action="store_true", help="the grid of leukaemia shares x results per candidate")
    parser.add_argument("--rates", nargs="+", type=float, default=[0.001, 0.01, 0.05], help="grid: leukaemia shares")
    parser.add_argument("--results", nargs="+", type=int, default=[10, 90], help="grid: results per candidate")
    parser.add_argument("--repeat", type=int, default=3, help="grid: paired runs per point (medians reported)")
    parser.add_argument("--all-patients", action="store_true", help="grid: measure --all-patients too")
    parser.add_argument("--drop", action="store_true", help="grid: delete each export once measured")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.grid:
        return grid_main(args)
    results = []
    for n in args.sizes:
        print(f"== {n} patients", file=sys.stderr)
        results.append(run_size(args.workdir, n, args.leukemia_rate, args.naive_sample))
        print(table(results[-1]) + "\n", flush=True)
    bridges = [next(m for m in r["measures"] if m["name"] == "bridge prescreen DIR") for r in results]
    if len(bridges) > 1:
        growth = {k: bridges[-1][k] / bridges[0][k] - 1 for k in ("rss_max_mb", "rss_tree_mb", "pss_tree_mb")}
        print(f"peak memory growth {results[0]['patients']:,} -> {results[-1]['patients']:,} patients: "
              f"{growth['rss_max_mb']:+.0%} max process, {growth['rss_tree_mb']:+.0%} tree RSS, "
              f"{growth['pss_tree_mb']:+.0%} tree PSS")
    (args.workdir / "results.json").write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
