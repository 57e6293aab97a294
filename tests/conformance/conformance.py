"""Runs the Autobahn cases 1-10 (kosoku) against a WebSocket URL and judges the results.

Called by run.sh with the venv's Python:  conformance.py URL EXPECTED_TOML REPORT_DIR

A case passes when kosoku's verdicts are OK for both the message exchange ("behavior") and
the closing handshake ("behaviorClose"). Any other case must be listed in EXPECTED_TOML
with exactly the verdicts it got (and the close code, where given) and a reason; a listed
case that now passes, or did not run, is an error too, so the list never outlives the
behaviour it explains. Exit status 0 when everything is accounted for, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

from kosoku import FailureError, run_fuzzingclient
from kosoku._report import write_reports
from kosoku.cases import CASES

# Autobahn has no group 8; 12 and 13 (permessage-deflate) are out of scope: the hub does
# not negotiate compression.
GROUPS = ["1", "2", "3", "4", "5", "6", "7", "9", "10"]
# Two cases at a time: quick (the whole run takes seconds) on a 2-core machine.
CONCURRENCY = 2


def sort_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


def load_expected(path: Path) -> dict[str, dict]:
    expected: dict[str, dict] = {}
    for entry in tomllib.loads(path.read_text())["accept"]:
        if not entry.get("reason", "").strip():
            sys.exit(f"{path}: an [[accept]] entry for {entry.get('cases')} has no reason")
        for case_id in entry["cases"]:
            if case_id in expected:
                sys.exit(f"{path}: case {case_id} is listed twice")
            expected[case_id] = entry
    return expected


async def run(url: str) -> list:
    try:
        return await run_fuzzingclient(url, [f"{g}.*" for g in GROUPS], concurrency=CONCURRENCY)
    except FailureError as failure:
        # Raised when any case is not OK/NON-STRICT/INFORMATIONAL; it carries every result.
        return failure.results


def main() -> int:
    url, expected_path, report_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    expected = load_expected(expected_path)
    wanted = sorted((c for c in CASES if c.split(".")[0] in GROUPS), key=sort_key)

    started = time.monotonic()
    results = asyncio.run(run(url))
    elapsed = time.monotonic() - started
    write_reports(results, str(report_dir))

    by_id = {r.case_id: r for r in results}
    problems = [f"case {c} did not run" for c in wanted if c not in by_id]
    groups: dict[str, Counter] = {}
    accepted = []
    for case_id in sorted(by_id, key=sort_key):
        r = by_id[case_id]
        verdict = (r.behavior.value, r.behavior_close.value)
        label = "OK" if verdict == ("OK", "OK") else f"{verdict[0]} / {verdict[1]}"
        groups.setdefault(case_id.split(".")[0], Counter())[label] += 1
        entry = expected.get(case_id)
        if label == "OK":
            if entry is not None:
                problems.append(f"case {case_id} passes now: remove it from {expected_path.name}")
            continue
        if entry is None:
            problems.append(f"case {case_id}: {label} (close code {r.remote_close_code}): {r.result} {r.result_close}")
            continue
        want = (entry["behavior"], entry["behavior_close"])
        code = entry.get("close_code")
        if verdict != want or (code is not None and r.remote_close_code != code):
            problems.append(
                f"case {case_id}: {label} with close code {r.remote_close_code}, "
                f"but {expected_path.name} expects {want[0]} / {want[1]}" + (f" with {code}" if code else "")
            )
        else:
            accepted.append(case_id)
    for case_id in expected:
        if case_id not in by_id:
            problems.append(f"case {case_id} is in {expected_path.name} but did not run")

    summary = {
        "url": url,
        "cases": len(results),
        "seconds": round(elapsed, 1),
        "groups": {g: dict(groups[g]) for g in sorted(groups, key=int)},
        "accepted": accepted,
        "problems": problems,
    }
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"conformance: {len(results)} cases in {elapsed:.1f} s against {url}")
    for g in sorted(groups, key=int):
        print(f"  {g:>2}: " + ", ".join(f"{n} {label}" for label, n in sorted(groups[g].items())))
    print(f"  {len(accepted)} not OK and accepted in {expected_path.name}; report in {report_dir}/index.html")
    for p in problems:
        print(f"  FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
