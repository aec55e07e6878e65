#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turns the per-configuration results of `make check` into a TAP log, a table
(test x {kvm, rkvm} x emulator) and the summary line "N passed, M failed".
Exit status 1 when anything failed (a failure on reference KVM included)."""
import glob
import os
import sys

ORDER = ["bochs-vmx", "bochs-vmx-smp", "bochs-vmx-noug", "qemu-svm", "bochs-vmx-debug"]


def failure_details(outdir, name, idx, hv, test, limit=25):
    """The failed checks and diagnostics a failed step printed, from its serial logs."""
    start = f"@@ START {idx} {hv} {test}"
    out = []
    for log in sorted(glob.glob(os.path.join(outdir, f"{name}.boot*.log"))):
        inside = False
        with open(log, errors="replace") as f:
            for line in f:
                line = line.rstrip("\r\n")
                if line.startswith(start):
                    inside = True
                elif inside and line.startswith("@@ "):
                    inside = False
                elif inside:
                    text = line.strip()
                    if text.startswith("not ok") or text.startswith("#") or "BAIL" in text \
                            or "Alarm" in text or "error" in text.lower():
                        out.append(text)
    if len(out) > limit:
        out = out[:limit] + [f"... ({len(out) - limit} more lines)"]
    return out


def main():
    outdir, tap_path, secs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    configs = {}
    for path in glob.glob(os.path.join(outdir, "*.results")):
        name = os.path.basename(path)[: -len(".results")]
        rows = []
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(" ", 5)
                if len(parts) < 5:
                    continue
                idx, hv, test, status, _ms = parts[:5]
                reason = parts[5] if len(parts) > 5 else ""
                rows.append((idx, hv, test, status, reason))
        configs[name] = rows
    names = sorted(configs, key=lambda n: (ORDER.index(n) if n in ORDER else 99, n))

    passed = failed = skipped = 0
    broken = []
    details = []
    retried = []
    lines = ["TAP version 13"]
    for name in names:
        for idx, hv, test, status, reason in configs[name]:
            n = len(lines)
            desc = f"{name} {hv} {test}"
            if status == "pass" and reason.startswith("retried"):
                passed += 1
                retried.append(f"{desc}: {reason}")
                retried += ["    " + d for d in failure_details(outdir, name, idx, hv, test)]
                lines.append(f"ok {n} - {desc} # {reason}")
            elif status == "pass":
                passed += 1
                lines.append(f"ok {n} - {desc}")
            elif status == "skip":
                skipped += 1
                lines.append(f"ok {n} - {desc} # SKIP {reason}")
            else:
                failed += 1
                lines.append(f"not ok {n} - {desc} # {reason}")
                if hv == "kvm":
                    broken.append(f"{name}/{test}")
                details.append(f"{name} {hv} {test}: {reason}")
                details += ["    " + d for d in failure_details(outdir, name, idx, hv, test)]
    lines.insert(1, f"1..{len(lines) - 1}")
    with open(tap_path, "w") as f:
        f.write("\n".join(lines) + "\n")

    # Table: one row per test, one column per (configuration, hypervisor).
    cols = [(n, hv) for n in names for hv in ("kvm", "rkvm")]
    cell = {}
    tests = []
    for name in names:
        for _idx, hv, test, status, reason in configs[name]:
            if test not in tests:
                tests.append(test)
            cell[(test, name, hv)] = {"pass": "pass", "skip": "skip"}.get(status, "FAIL")
            if status == "pass" and reason.startswith("retried"):
                cell[(test, name, hv)] = "pass*"
    width = max([len(t) for t in tests] + [4])
    head = f"{'test':<{width}} | " + " | ".join(f"{n}/{hv}" for n, hv in cols)
    table = [head, "-" * len(head)]
    for t in tests:
        table.append(f"{t:<{width}} | " + " | ".join(
            f"{cell.get((t, n, hv), '-'):<{len(n) + len(hv) + 1}}" for n, hv in cols))
    with open(os.path.join(outdir, "table.txt"), "w") as f:
        f.write("\n".join(table) + "\n")

    print("\n".join(l for l in lines if l.startswith("not ok") or "# SKIP" in l))
    print()
    print("\n".join(table))
    print()
    if retried:
        print("passed on a second run (pass* in the table):")
        print("\n".join("    " + r for r in retried))
    if details:
        print("what the failed tests printed:")
        print("\n".join(details))
    if broken:
        print("broken tests (they fail on reference KVM): " + " ".join(broken))
    if not names:
        print("no test ran")
        failed += 1
    print(f"TAP log: {tap_path}; serial logs: {outdir}/*.log; {secs} s in emulators")
    print(f"{skipped} skipped")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
