#!/usr/bin/env python3
"""The AVX-512 objects must not leak AVX-512 code into the rest of the program.

Files named *_avx512.cpp are compiled with -mavx512*. An inline or template function that such a
file and another file both define is emitted in both as a weak symbol, and the linker keeps one
copy, possibly the AVX-512 one, which then runs on CPUs without AVX-512 (an illegal instruction
on Zen 3, found only there). So no weak function of an *_avx512 object may contain an EVEX
instruction (first byte 0x62: in 64-bit mode that byte only ever starts EVEX).

Usage: isa_isolation_test.py LIB.a [LIB.a ...]   (checks every *_avx512*.o member)
Exit 0 when clean, 1 with the offending functions listed.
"""
import re
import subprocess
import sys


def members_with_code(lib):
    """{member: {function: [first bytes of each instruction]}} for the *_avx512 members."""
    out = subprocess.run(["objdump", "-d", "-w", lib], check=True, capture_output=True, text=True).stdout
    result, member, func = {}, None, None
    for line in out.splitlines():
        m = re.match(r"^(\S+\.o):\s+file format", line)
        if m:
            member = m.group(1) if "_avx512" in m.group(1) else None
            func = None
            if member:
                result[member] = {}
            continue
        if member is None:
            continue
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            func = m.group(1)
            result[member][func] = []
            continue
        m = re.match(r"^\s+[0-9a-f]+:\t([0-9a-f]{2})", line)
        if m and func:
            result[member][func].append(m.group(1))
    return result


def weak_symbols(lib):
    """{member: set of weak defined symbols} (nm types W, V, u)."""
    out = subprocess.run(["nm", "-A", "--defined-only", lib], check=True, capture_output=True, text=True).stdout
    weak = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        where, kind, name = parts[0], parts[-2], parts[-1]
        if kind in ("W", "V", "u"):
            member = where.split(":")[-2] if where.count(":") >= 2 else where
            weak.setdefault(member, set()).add(name)
    return weak


def main(libs):
    checked, bad = 0, []
    for lib in libs:
        code = members_with_code(lib)
        weak = weak_symbols(lib)
        for member, funcs in code.items():
            checked += 1
            for name in weak.get(member, ()):
                first = funcs.get(name)
                if first and "62" in first:
                    bad.append(f"{lib}:{member}: weak function {name} contains EVEX instructions")
            print(f"{member}: {len(funcs)} functions, weak: {sorted(weak.get(member, ()))}")
    if checked == 0:
        print("no *_avx512 object found in", libs, "- nothing to check is a failure of the build, not a pass")
        return 1
    for b in bad:
        print("FAIL", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
