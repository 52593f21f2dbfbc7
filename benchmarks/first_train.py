"""What a new user's first ``radialrouter train`` costs: the CLI in a subprocess with an EMPTY embedding cache (and
an empty ONNX export folder), then once more with the cache it filled.

Records the wall time of each run, the stage messages the user sees (every line that is not a progress bar, with
the second it appeared), the encoder's announced estimate against the measured encoding time, and the machine's
load average before and after, then writes ``benchmarks/results/first_train.json`` and ``.md``.

    python benchmarks/first_train.py [--data PATH] [--router radial] [--encoder NAME] [--no-warm]

The README's first-run figure comes from this file: rerun it on a quiet machine before quoting it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "routerbench3.parquet"
RESULTS = ROOT / "benchmarks" / "results"
_BAR = re.compile(r"\d+%\||it/s\]|q/s\]|step/s|\?it/s|Loading weights")


def run_cli(args: list[str], env: dict[str, str]) -> dict:
    """Run ``python -m radialrouter ARGS``; stream its output, timestamping every line and bar refresh."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "radialrouter", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    stages: list[dict] = []
    buffer = b""
    assert proc.stdout is not None
    while True:
        chunk = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
        if not chunk:
            break
        buffer += chunk
        *parts, buffer = re.split(rb"[\r\n]", buffer)
        now = round(time.perf_counter() - start, 1)
        for raw in parts:
            line = raw.decode("utf-8", "replace").strip()
            if line and not _BAR.search(line) and not line.startswith(("┃", "│", "┏", "┡", "└", "━")):
                stages.append({"t": now, "line": line})
                print(f"[{now:6.1f} s] {line}", flush=True)
    rc = proc.wait()
    tail = buffer.decode("utf-8", "replace").strip()
    if tail and not _BAR.search(tail):
        stages.append({"t": round(time.perf_counter() - start, 1), "line": tail})
    return {"args": args, "exit_code": rc, "wall_seconds": round(time.perf_counter() - start, 1), "stages": stages}


def _encoding(stages: list[dict]) -> dict:
    """The announced estimate and the measured encoding time, read from the stage lines."""
    out: dict = {}
    for s in stages:
        m = re.search(r"encoding ([\d,]+) new .*?: ~([\d.]+) (s|min) on this machine", s["line"])
        if m:
            out["prompts"] = int(m.group(1).replace(",", ""))
            out["estimate_seconds"] = float(m.group(2)) * (60 if m.group(3) == "min" else 1)
            out["announced_at"] = s["t"]
        m = re.search(r"^encoded in ([\d.]+) (s|min)", s["line"])
        if m:
            out["measured_seconds"] = float(m.group(1)) * (60 if m.group(2) == "min" else 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--router", default=None, help="--router for train (default: train's own default)")
    parser.add_argument("--encoder", default=None, help="--encoder for train (default: train's own default)")
    parser.add_argument("--warm", action=argparse.BooleanOptionalAction, default=True,
                        help="Also time a second run with the cache the first one filled.")
    parser.add_argument("--out", default=str(RESULTS / "first_train"))
    args = parser.parse_args()
    extra = [*(["--router", args.router] if args.router else []), *(["--encoder", args.encoder] if args.encoder
                                                                      else [])]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="first-train-") as tmp:
        env = {**os.environ, "RADIALROUTER_CACHE": f"{tmp}/cache", "RADIALROUTER_ONNX_DIR": f"{tmp}/onnx",
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}
        cmd = ["train", "--data", args.data, "--out", f"{tmp}/router", *extra]
        print(f"cold: radialrouter {' '.join(cmd)} (empty cache {tmp}/cache)", flush=True)
        cold = run_cli(cmd, env)
        load_mid = os.getloadavg()
        warm = None
        if args.warm and cold["exit_code"] == 0:
            print("warm: the same command, with the cache the cold run filled", flush=True)
            warm = run_cli(cmd, env)
    load_after = os.getloadavg()
    cold["encoding"] = _encoding(cold["stages"])
    doc = {"data": str(args.data), "command": "radialrouter " + " ".join(["train", "--data", Path(args.data).name,
                                                                          "--out", "DIR", *extra]),
           "cold": cold, "warm": warm,
           "load_average": {"before": load_before, "between": load_mid, "after": load_after},
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                       "processor": platform.processor() or platform.machine()},
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(f"cold {cold['wall_seconds']} s" + (f", warm {warm['wall_seconds']} s" if warm else "")
          + f"; wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def markdown(doc: dict) -> str:
    """The report: times, load, encoding estimate vs measured, and the stage lines of the cold run."""
    cold, warm, load = doc["cold"], doc["warm"], doc["load_average"]
    enc = cold.get("encoding", {})
    lines = ["# First `radialrouter train` on new data (empty embedding cache)", "",
             f"`{doc['command']}`, run by `benchmarks/first_train.py` in a subprocess with `RADIALROUTER_CACHE` and "
             "`RADIALROUTER_ONNX_DIR` pointing at empty temporary folders; then the same command again with the "
             "cache the first run filled.", "",
             f"Machine: {doc['machine']['platform']}, {doc['machine']['cpu_count']} CPUs; load average (1, 5, 15 min) "
             f"before {_load(load['before'])}, between the runs {_load(load['between'])}, after "
             f"{_load(load['after'])}; {doc['started_utc']}.", "",
             "| run | wall s | exit code |", "|---|---:|---:|",
             f"| cold (empty cache) | {cold['wall_seconds']} | {cold['exit_code']} |"]
    if warm:
        lines.append(f"| warm (cache filled by the cold run) | {warm['wall_seconds']} | {warm['exit_code']} |")
    if enc:
        lines += ["", f"Encoding: {enc.get('prompts', '?')} prompts; announced ~{enc.get('estimate_seconds', '?')} s "
                  f"at {enc.get('announced_at', '?')} s into the run, measured {enc.get('measured_seconds', '?')} s."]
    lines += ["", "## What the cold run printed (progress bars left out)", "", "| at s | line |", "|---:|---|"]
    lines += [f"| {s['t']} | {s['line'].replace('|', '/')} |" for s in cold["stages"]]
    return "\n".join(lines) + "\n"


def _load(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
