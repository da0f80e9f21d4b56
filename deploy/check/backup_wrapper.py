#!/usr/bin/env python3
"""Runs the shell wrapper of deploy/systemd/hydra-billing-backup.service against a stub
`hydra-billing backup` in a temporary state directory: names are date-stamped, the 14 newest are
kept, a failed backup prunes nothing and fails the unit, and files that are not backups are left
alone.

systemd-analyze verify checks the unit's syntax but never runs ExecStart, and no systemd runs
here, so the command line is taken out of the unit the way systemd reads it for this one: lines
ending in a backslash joined, the words split with shell quoting, `$$` -> `$` and `%%` -> `%`.
The unit uses no other escape, which this test also asserts."""

import os
import re
import shlex
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "systemd/hydra-billing-backup.service"
STATE = "/var/lib/hydra-billing"
BINARY = "/usr/local/bin/hydra-billing"

# Writes PATH like `hydra-billing backup PATH` (VACUUM INTO refuses an existing file).
STUB = """#!/bin/sh
set -eu
[ "$1" = backup ] || { echo "stub: unexpected $*" >&2; exit 2; }
[ ! -e "$2" ] || { echo "stub: $2 exists" >&2; exit 1; }
[ ! -e "$STUB_FAIL" ] || { echo "stub: failing on purpose" >&2; exit 1; }
echo copy > "$2"
"""
# Successive stamps from a counter, since real runs seconds apart would take real seconds.
DATE = """#!/bin/sh
n=$(cat "$DATE_COUNTER"); echo $((n + 1)) > "$DATE_COUNTER"
printf '202601%02dT030000Z\\n' "$n"
"""


def exec_start():
    lines = UNIT.read_text().replace("\\\n", " ").splitlines()
    found = [ln.split("=", 1)[1] for ln in lines if ln.startswith("ExecStart=")]
    if len(found) != 1:
        sys.exit(f"FAIL {UNIT.name}: expected one ExecStart=, found {len(found)}")
    raw = found[0]
    if re.search(r"%[^%]|%$", raw.replace("%%", "")) or "\\" in raw:
        sys.exit(f"FAIL {UNIT.name}: ExecStart uses a specifier or escape this test does not model")
    if re.search(r"(?<!\$)\$(?!\$)", raw.replace("$$", "")):
        sys.exit(f"FAIL {UNIT.name}: a single `$` in ExecStart would be expanded by systemd")
    return [w.replace("$$", "$").replace("%%", "%") for w in shlex.split(raw)]


def main():
    argv = exec_start()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        state, bin_dir = tmp / "state", tmp / "bin"
        (state / "backups").mkdir(parents=True)  # StateDirectory= makes it before ExecStart
        bin_dir.mkdir()
        for name, text in (("hydra-billing", STUB), ("date", DATE)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(stat.S_IRWXU)
        counter, fail_flag = tmp / "counter", tmp / "fail"
        counter.write_text("1\n")
        argv = [a.replace(BINARY, str(bin_dir / "hydra-billing")).replace(STATE, str(state)) for a in argv]
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DATE_COUNTER": str(counter),
               "STUB_FAIL": str(fail_flag)}
        backups = state / "backups"
        (backups / "notes.txt").write_text("an operator's file\n")

        def run():
            return subprocess.run(argv, env=env, capture_output=True, text=True)

        for i in range(16):
            r = run()
            if r.returncode != 0:
                sys.exit(f"FAIL backup run {i + 1}: exit {r.returncode}: {r.stderr.strip()}")
        kept = sorted(p.name for p in backups.glob("hydra-billing-*"))
        want = [f"hydra-billing-202601{d:02d}T030000Z.db" for d in range(3, 17)]
        if kept != want:
            sys.exit(f"FAIL after 16 runs kept {kept}, expected the 14 newest {want}")
        if not (backups / "notes.txt").exists():
            sys.exit("FAIL the prune removed a file that is not a backup")

        fail_flag.touch()
        r = run()
        if r.returncode == 0:
            sys.exit("FAIL a failed backup left the unit successful")
        if sorted(p.name for p in backups.glob("hydra-billing-*")) != want:
            sys.exit("FAIL a failed backup pruned or added files")
        fail_flag.unlink()

        counter.write_text("16\n")  # the stamp of an existing backup: `backup` refuses it
        if run().returncode == 0:
            sys.exit("FAIL a refused backup (existing PATH) left the unit successful")
    print("ok: the backup wrapper date-stamps, keeps the 14 newest, and prunes nothing when a backup fails")


if __name__ == "__main__":
    main()
