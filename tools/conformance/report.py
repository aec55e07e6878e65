#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The conformance scoreboard: reads the serial logs of `make conformance` (the Bochs/VMX run
and the QEMU/SVM run, OUTDIR/boot*.log each), gives every test x {kvm, rkvm} x emulator a
verdict (pass, fail, skip, timeout) with its reason taken from the test's own output, and
writes the generated reStructuredText scoreboard (Documentation/rkvm/conformance.rst),
OUTDIR/results.tsv of each run and a summary on stdout."""
import argparse
import datetime
import glob
import os
import re
import sys
import textwrap

HVS = ("kvm", "rkvm")
# The emulators: (key, title of KVM there, title of rkvm there, how the run is described).
EMUS = (("bochs", "kvm-intel", "rkvm/vmx"), ("qemu", "kvm-amd", "rkvm/svm"))


class Step:
    def __init__(self, idx, hv, test):
        self.idx, self.hv, self.test = idx, hv, test
        self.status = None  # pass fail skip timeout
        self.ms = None
        self.runner_reason = ""
        self.out = []  # the test's own output
        self.kmsg = []  # kernel log lines printed after the test
        self.end = ""  # how the boot ended, for a step without a result
        self.boot = ""


def parse_logs(outdir):
    steps = {}
    logs = sorted(glob.glob(os.path.join(outdir, "boot*.log")),
                  key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))
    for path in logs:
        with open(path, errors="replace") as f:
            lines = [l.rstrip("\r\n").replace("\r", "") for l in f]
        cur = None
        panic = []
        for line in lines:
            m = re.match(r"^@@ START (\d+) (\S+) (\S+)", line)
            if m:
                cur = Step(int(m.group(1)), m.group(2), m.group(3))
                cur.boot = os.path.basename(path)
                continue
            m = re.match(r"^@@ RESULT (\d+) (\S+) (\S+) (\S+) (\d+) ?(.*)", line)
            if m and cur and int(m.group(1)) == cur.idx:
                cur.status, cur.ms, cur.runner_reason = m.group(4), int(m.group(5)), m.group(6)
                steps[(cur.hv, cur.test)] = cur
                cur = None
                continue
            if cur is None:
                continue
            if line.startswith("    "):
                cur.out.append(line[4:])
            elif line.startswith("# kmsg: "):
                cur.kmsg.append(line[len("# kmsg: "):])
            elif line.startswith("@@ HOST killed"):
                cur.end = line[len("@@ HOST "):]
            elif re.search(r"Kernel panic|BUG:|Oops|general protection fault|RIP:", line):
                panic.append(re.sub(r"^\[[ 0-9.]*\] ", "", line))
        if cur is not None:  # the boot ended inside this step
            cur.kmsg += panic
            if any("Kernel panic" in l for l in panic) or "rebooted" in cur.end:
                cur.status = "crash"
            elif "no progress" in cur.end:
                cur.status = "hostkill"
            else:
                cur.status = "died"
            steps[(cur.hv, cur.test)] = cur
    return steps


def clean(s, n=160):
    s = re.sub(r"\s+", " ", s).strip()
    return s if len(s) <= n else s[: n - 3] + "..."


def assertion(out):
    """The first "Test Assertion Failure" of a test's output, as one line."""
    for i, l in enumerate(out):
        if "==== Test Assertion Failure ====" not in l:
            continue
        where = out[i + 1].strip() if i + 1 < len(out) else ""
        errno = ""
        msg = ""
        j = i + 2
        if j < len(out) and out[j].strip().startswith("pid="):
            m = re.search(r"errno=(\d+) - (.*)", out[j])
            if m and m.group(1) != "0":
                errno = f"errno {m.group(1)} ({m.group(2).strip()})"
            j += 1
        for l2 in out[j:]:
            t = l2.strip()
            if not t or "addr2line" in t or re.match(r"^(0x[0-9a-f]+|\?\?|/?\S+\.c:\d+)", t):
                continue
            msg = t
            break
        where = re.sub(r"^\S*/", "", where)
        if msg and msg in where:
            msg = ""
        return clean(" ".join(x for x in (where, msg and "- " + msg, errno and "- " + errno) if x))
    return ""


def verdict(step, step_limit):
    """(status, reason) in the scoreboard's terms."""
    out = step.out
    if step.status == "pass":
        return "pass", ""
    if step.status == "skip":
        for l in out:
            m = re.search(r"#\s*SKIP\s*(.*)", l)
            if m and m.group(1).strip():
                return "skip", clean(m.group(1).lstrip("- "))
        last = next((l for l in reversed(out) if l.strip() and not l.startswith("Random seed")), "")
        return "skip", clean(last or step.runner_reason)
    oom = any(re.search(r"Out of memory|oom-kill|invoked oom-killer", l) for l in step.kmsg)
    last = next((l for l in reversed(out) if l.strip() and "addr2line" not in l), "") or "(none)"
    if step.status == "fail" and step.runner_reason.startswith("killed after"):
        if oom:
            return "fail", "killed by the guest's OOM killer"
        return "timeout", clean(f"{step.runner_reason} of guest time (in-guest limit); last output: {last}")
    if step.status == "hostkill":
        return "timeout", clean(f"no result after {step_limit} s of wall time, boot killed; "
                                f"last output: {last}")
    if step.status == "crash":
        p = next((l for l in step.kmsg if "Kernel panic" in l or "BUG:" in l), "")
        return "fail", clean("guest kernel crashed: " + (p or step.end))
    if step.status == "died":
        return "fail", clean("the emulator exited during the test " + step.end)
    a = assertion(out)
    if a:
        return "fail", a
    notok = [l for l in out if re.match(r"^\s*not ok \d+", l)]
    if notok:
        # kselftest_harness: the "# file:line:..." diagnostic before the first "not ok".
        i = out.index(notok[0])
        diag = next((out[k] for k in range(i - 1, max(i - 8, -1), -1)
                     if re.match(r"^#\s+\S+\.c:\d+:", out[k])), "")
        return "fail", clean(re.sub(r"^\s*", "", notok[0]) + (" - " + diag.lstrip("# ") if diag else ""))
    if oom:
        return "fail", "killed by the guest's OOM killer"
    return "fail", clean(f"{step.runner_reason}; last output: {last}")


def read_scope(path):
    scope = {}
    with open(path) as f:
        lines = f.read().splitlines()
    borders = [i for i, l in enumerate(lines) if re.match(r"^=+\s+=+\s*$", l)]
    if len(borders) < 3:
        sys.exit(f"{path}: no table")
    for l in lines[borders[1] + 1: borders[2]]:
        if l.strip():
            name, _, why = l.strip().partition(" ")
            scope[name] = why.strip()
    return scope


def lit(s):
    """An inline literal for reStructuredText."""
    s = s.replace("`", "'").strip()
    return f"``{s}``" if s else ""


def table(headers, rows):
    """A reStructuredText simple table; the last column may run past its border."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers[:-1])]
    widths.append(max(len(headers[-1]), 8))
    border = "  ".join("=" * w for w in widths)
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return [border, fmt(headers), border] + [fmt(r) for r in rows] + [border]


# Why a test failed or skipped on rkvm, from its reason: the first capability it missed.
BLOCKERS = [
    (r"KVM_CREATE_IRQCHIP|KVM_CAP_SPLIT_IRQCHIP|kvm_arch_has_default_irqchip|irqchip",
     "in-kernel irqchip (KVM_CREATE_IRQCHIP: PIC, IOAPIC, local APIC)"),
    (r"KVM_GET_TSC_KHZ|KVM_CAP_GET_TSC_KHZ", "KVM_CAP_GET_TSC_KHZ (KVM_GET_TSC_KHZ)"),
    (r"KVM_GET_STATS_FD|BINARY_STATS", "binary stats (KVM_GET_STATS_FD)"),
    (r"KVM_CAP_IMMEDIATE_EXIT", "KVM_CAP_IMMEDIATE_EXIT"),
    (r"/dev/kvm", "/dev/kvm missing"),
]


def blocker(reason):
    m = re.search(r"(/sys/module/kvm[a-z_]*/parameters/[a-z_0-9]+)", reason)
    if m:
        return f"no {m.group(1)} (rkvm is not the kvm module)"
    for pat, name in BLOCKERS:
        if re.search(pat, reason):
            return name
    m = re.search(r"\b(KVM_CAP_[A-Z0-9_]+|KVM_[A-Z0-9_]+)\b", reason)
    if m:
        return m.group(1)
    return "other: " + clean(reason, 70)


def main():
    ap = argparse.ArgumentParser()
    # More than one: the runs of each hypervisor made side by side, read together.
    ap.add_argument("--outdir", action="append", default=[], help="Bochs (VMX) run")
    ap.add_argument("--svm-outdir", action="append", default=[], help="QEMU (SVM) run")
    ap.add_argument("--tests", required=True)
    ap.add_argument("--scope", required=True)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--boots", type=int, default=0)
    ap.add_argument("--step-limit", type=int, default=0)
    ap.add_argument("--test-timeout", type=int, default=0)
    ap.add_argument("--guest-mem", type=int, default=0)
    ap.add_argument("--kernel", default="")
    # A sentence about how this run was made, when it differs from `make conformance`.
    ap.add_argument("--note", default="")
    a = ap.parse_args()

    built = []  # (name, upstream path)
    with open(a.tests) as f:
        for l in f:
            if l.strip():
                name, path = l.split()
                built.append((name, path))
    scope = read_scope(a.scope)
    known = {p for _, p in built}
    for p in scope:
        if p not in known:
            sys.exit(f"{a.scope}: {p} is not a built test")
    paths = [p for _, p in built]
    in_scope = [p for p in paths if p not in scope]

    runs = []  # (emu key, kvm title, rkvm title, res) for each emulator that ran
    for (key, ktitle, rtitle), dirs in zip(EMUS, (a.outdir, a.svm_outdir)):
        if not dirs:
            continue
        steps = {}
        for outdir in dirs:
            steps.update(parse_logs(outdir))
        res = {}  # (path, hv) -> (status, reason, ms)
        for name, path in built:
            for hv in HVS:
                st = steps.get((hv, name))
                if st is not None:
                    status, why = verdict(st, a.step_limit)
                    res[(path, hv)] = (status, why, st.ms)
        with open(os.path.join(dirs[0], "results.tsv"), "w") as f:
            f.write("test\tin_scope\thv\tstatus\tms\treason\n")
            for path in paths:
                for hv in HVS:
                    if (path, hv) in res:
                        status, why, ms = res[(path, hv)]
                        f.write(f"{path}\t{int(path not in scope)}\t{hv}\t{status}\t"
                                f"{ms if ms is not None else ''}\t{why}\n")
        runs.append((key, ktitle, rtitle, res))
    if not runs:
        sys.exit("no run to report (--outdir, --svm-outdir)")

    def count(res, hv, ps):
        c = {"pass": 0, "fail": 0, "skip": 0, "timeout": 0, "not run": 0}
        for p in ps:
            c[res[(p, hv)][0] if (p, hv) in res else "not run"] += 1
        return c

    def blockers_of(res):
        """rkvm's blockers among the in-scope tests it does not pass but KVM does."""
        b = {}
        for p in in_scope:
            if (p, "rkvm") not in res:
                continue
            st, why, _ = res[(p, "rkvm")]
            if st in ("fail", "skip", "timeout") and res.get((p, "kvm"), ("",))[0] == "pass":
                k = blocker(why) if st != "timeout" else "timeout: " + clean(why, 60)
                b.setdefault(k, []).append(p)
        return b

    # ---- stdout summary ----
    out = [f"built {len(paths)}, in scope {len(in_scope)} (out of scope {len(scope)})"]
    for key, ktitle, rtitle, res in runs:
        for hv, title in (("kvm", ktitle), ("rkvm", rtitle)):
            c = count(res, hv, in_scope)
            out.append(f"{title:9} (in scope): " + ", ".join(f"{v} {k}" for k, v in c.items() if v))
        out.append(f"{rtitle} blockers (in-scope tests passing on {ktitle}, not on rkvm):")
        for b, ps in sorted(blockers_of(res).items(), key=lambda kv: -len(kv[1])):
            out.append(f"  {len(ps):3}  {b}")
    out.append(f"{a.seconds} s in {a.boots} boots")
    print("\n".join(out))

    if a.doc == "-":
        return 0

    # ---- the scoreboard ----
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    d = []
    d += [".. SPDX-License-Identifier: GPL-2.0",
          ".. Generated by `make conformance` (tools/conformance/report.py). Do not edit.",
          "",
          "=====================================",
          "KVM selftests conformance scoreboard",
          "=====================================",
          "",
          "The kernel's own KVM selftests (``tools/testing/selftests/kvm`` of the test kernel "
          f"{a.kernel}: every x86 test and every generic test x86 builds, statically linked, "
          "unmodified) run first against KVM and then against rkvm, in the same boot, on two "
          "emulated machines: Intel VMX in Bochs 3.0 (``corei7_icelake_u``, 1 CPU, "
          f"{a.guest_mem} MB; kvm-intel against rkvm's VMX backend, rkvm/vmx) and AMD SVM in "
          "QEMU's TCG (``-cpu EPYC``, 2 CPUs, same memory; kvm-amd against rkvm's SVM "
          "backend, rkvm/svm). kvm-intel is loaded with ``enable_apicv=0`` (Bochs rejects "
          "KVM's posted-interrupt descriptor). For the rkvm runs no KVM module is loaded and "
          "``/dev/kvm`` is a device node with rkvm's major:minor (the selftests hard-code "
          "/dev/kvm).",
          "",
          f"Limits: {a.step_limit} s of wall time per test, enforced from the host (a test "
          "without a result by then is a *timeout*; the guest is killed and the next boot "
          f"resumes after it), and {a.test_timeout} s of guest time inside the guest. "
          "A guest kernel crash fails the test that was running.",
          "",
          "rkvm's module parameters carry kvm_intel's names for what it shares with it "
          "(``ept``, ``vpid``, ``unrestricted_guest``, ``pml``, ``vmentry_l1d_flush``), "
          "kvm_amd's (``npt``, ``avic=N``) and "
          "kvm's for fixed facts a KVM program asks about (``force_emulation_prefix=0``, "
          "``enable_pmu=N``, ``enable_mediated_pmu=N``, ``ignore_msrs=N``; any other value "
          "is refused at load time). For the rkvm runs ``/sys/module/kvm`` and "
          "``/sys/module/kvm_intel`` (``kvm_amd`` on AMD) show ``/sys/module/rkvm`` (a tmpfs of links over "
          "/sys/module while rkvm is loaded, like the /dev/kvm node). Parameters rkvm has "
          "no meaning for (``tdp_mmu``, ``eager_page_split``, ...) are absent, and tests that "
          "read them say so in the reason column. Nothing is faked and no test is patched.",
          "",
          "Tests that do not count (nested virtualization, Hyper-V/Xen emulation, SEV, PMU, "
          "SMM, guest_memfd/private memory, AMX) are listed with their reasons in "
          "conformance-scope.rst; they still run and are shown below, marked *out*.",
          "",
          f"Last run: {now}, {a.seconds} s in the emulators ({a.boots} boots). "
          "Regenerate with ``make conformance``." + (f" {a.note}" if a.note else ""),
          "",
          "Summary",
          "=======",
          ""]
    hdr = ["tests", "hypervisor", "pass", "fail", "skip", "timeout"]
    rows = []
    for which, label, ps in (("in", "in scope", in_scope), ("all", "all built", paths)):
        for key, ktitle, rtitle, res in runs:
            for hv, title in (("kvm", ktitle), ("rkvm", rtitle)):
                c = count(res, hv, ps)
                rows.append([f"{label} ({len(ps)})", title] +
                            [str(c[k]) for k in ("pass", "fail", "skip", "timeout")])
    d += table(hdr, rows)
    nr = sum(count(res, hv, in_scope)["not run"] for _, _, _, res in runs for hv in HVS)
    if nr:
        d += ["", f"{nr} in-scope test runs have no result (not run)."]
    d += ["",
          "What rkvm lacks",
          "===============",
          "",
          "In-scope tests that pass on KVM but not on rkvm on the same machine, grouped by the "
          "first thing each one missed (taken from its failure or skip message; a test can "
          "have more blockers behind the first):",
          ""]
    for key, ktitle, rtitle, res in runs:
        blockers = blockers_of(res)
        brows = [[str(len(ps)), b, ", ".join(p.split("/")[-1] for p in sorted(ps))]
                 for b, ps in sorted(blockers.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
        title = f"{rtitle} (passing on {ktitle})"
        d += [title, "-" * len(title), ""]
        d += table(["tests", "first blocker", "which"], brows) if brows else ["None."]
        d.append("")
    d += ["Per test",
          "========",
          "",
          "*scope*: *out* = listed in conformance-scope.rst. The note is rkvm's reason where "
          "rkvm does not pass (VMX first, then SVM), otherwise KVM's where it does not pass.",
          ""]
    trows = []
    for p in paths:
        cells, note = [], ""
        for key, ktitle, rtitle, res in runs:
            kv = res.get((p, "kvm"), ("-", "", None))
            rk = res.get((p, "rkvm"), ("-", "", None))
            cells += [kv[0], rk[0]]
            if not note and rk[0] not in ("pass", "-"):
                note = f"{rtitle}: " + rk[1]
        if not note:
            for key, ktitle, rtitle, res in runs:
                kv = res.get((p, "kvm"), ("-", "", None))
                if kv[0] not in ("pass", "-"):
                    note = f"{ktitle}: " + kv[1]
                    break
        trows.append([p, "out" if p in scope else "in"] + cells + [lit(note)])
    hdr = ["test", "scope"] + [t for _, kt, rt, _ in runs for t in (kt, rt)] + ["note"]
    d += table(hdr, trows)
    for key, ktitle, rtitle, res in runs:
        title = f"Reasons on {ktitle}"
        d += ["", title, "=" * len(title), "",
              f"Why {ktitle} itself does not pass a test (the emulated machine, the test "
              "kernel's configuration, or the bench):", ""]
        krows = [[p, res[(p, "kvm")][0], lit(res[(p, "kvm")][1])] for p in paths
                 if (p, "kvm") in res and res[(p, "kvm")][0] != "pass"]
        d += table(["test", ktitle, "reason"], krows) if krows else ["None."]
    d.append("")
    # Wrap prose (not tables, titles or comments) at 90 columns.
    wrapped = []
    for l in d:
        if len(l) > 90 and not re.match(r"^(=|-|\.\. |\S+\s{2,})", l) and "  " not in l.strip():
            wrapped += textwrap.wrap(l, 90, break_on_hyphens=False, break_long_words=False)
        else:
            wrapped.append(l)
    with open(a.doc, "w") as f:
        f.write("\n".join(wrapped))
    print(f"scoreboard: {a.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
