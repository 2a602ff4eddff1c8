"""Summarises an Autobahn|TestSuite fuzzingclient report (index.json) for scripts/autobahn.sh.

Usage: python3 scripts/autobahn_report.py INDEX.json
           [--allow-informational "7.1.6 ..."] [--allow-unimplemented "12 13"]

Each case gets one outcome: UNIMPLEMENTED if the suite says so, FAILED if its behavior is
anything but OK / NON-STRICT / INFORMATIONAL or its behaviorClose is anything but OK /
INFORMATIONAL (WRONG CODE, UNCLEAN, FAILED BY CLIENT ...), else its behavior. Prints the
counts per group, the cases that are not OK, and a last line ending in PASS or FAIL; exits
1 unless every case is OK or an accepted exception (INFORMATIONAL for a listed case id,
UNIMPLEMENTED for a listed top-level section).
"""
import argparse
import json
import sys

OUTCOMES = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
GROUPS = [
    ("1-8, 10 (protocol)", lambda s: s not in ("9", "12", "13")),
    ("9 (performance)", lambda s: s == "9"),
    ("12, 13 (deflate)", lambda s: s in ("12", "13")),
]

ap = argparse.ArgumentParser()
ap.add_argument("index")
ap.add_argument("--allow-informational", default="")
ap.add_argument("--allow-unimplemented", default="")
args = ap.parse_args()
allow_info = set(args.allow_informational.split())
allow_unimpl = set(args.allow_unimplemented.split())

with open(args.index) as f:
    index = json.load(f)
if len(index) != 1:
    sys.exit(f"autobahn: expected one agent in {args.index}, found {sorted(index)}")
(agent, cases), = index.items()


def key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def outcome(r):
    if r["behavior"] == "UNIMPLEMENTED":
        return "UNIMPLEMENTED"
    if r["behavior"] in ("OK", "NON-STRICT", "INFORMATIONAL") and r["behaviorClose"] in ("OK", "INFORMATIONAL"):
        return r["behavior"]
    return "FAILED"


def accepted(case_id, out):
    return (
        out == "OK"
        or (out == "INFORMATIONAL" and case_id in allow_info)
        or (out == "UNIMPLEMENTED" and case_id.split(".")[0] in allow_unimpl)
    )


ids = sorted(cases, key=key)
outs = {c: outcome(cases[c]) for c in ids}

width = max(len(name) for name, _ in GROUPS) + 2
print(f"{'group':<{width}}{'cases':>6}" + "".join(f"{o:>15}" for o in OUTCOMES))
rows = [(name, [c for c in ids if pick(c.split('.')[0])]) for name, pick in GROUPS]
rows.append(("all", ids))
for name, members in rows:
    counts = [sum(outs[c] == o for c in members) for o in OUTCOMES]
    print(f"{name:<{width}}{len(members):>6}" + "".join(f"{n:>15}" for n in counts))

rejected = [c for c in ids if not accepted(c, outs[c])]
allowed = [c for c in ids if outs[c] != "OK" and accepted(c, outs[c])]
if rejected:
    print(f"not OK, not accepted ({len(rejected)}): behavior / behaviorClose / close code from the server")
    for c in rejected:
        r = cases[c]
        print(f"  {c:<10}{outs[c]:<15}{r['behavior']} / {r['behaviorClose']} / {r.get('remoteCloseCode')}")
if allowed:
    by_outcome = {}
    for c in allowed:
        by_outcome.setdefault(outs[c], []).append(c)
    for o, members in by_outcome.items():
        if len(members) <= 10:
            listed = " ".join(members)
        else:
            sections = {}
            for c in members:
                s = c.split(".")[0]
                sections[s] = sections.get(s, 0) + 1
            listed = ", ".join(f"{s}.* ({n})" for s, n in sections.items())
        print(f"not OK, accepted {o} ({len(members)}): {listed}")

total = ", ".join(f"{sum(outs[c] == o for c in ids)} {o}" for o in OUTCOMES)
verdict = "FAIL" if rejected or not ids else "PASS"
print(f"autobahn: {len(ids)} cases: {total} ({len(rejected)} not accepted) -> {verdict}")
sys.exit(1 if verdict == "FAIL" else 0)
