#!/usr/bin/env python3
"""The ISA objects must not leak their instructions into code that runs on other CPUs.

Files named *_avx2.cpp are compiled with -mavx2 -mfma ..., files named *_avx512.cpp with -mavx512*.
Their code may run only after dispatch (src/core/kernels/dispatch.cpp) has checked the CPU. Two
ways it can escape that check:

1. An inline or template function that such a file and another file both define is emitted in both
   as a weak symbol (a COMDAT group), and the linker keeps one copy, possibly the ISA one, which then
   runs on CPUs without that ISA (an illegal instruction on Zen 3, found only there). The group also
   holds the pieces GCC splits off a function (name.cold, name.part.N, name.isra.N, name.constprop.N):
   they are checked as part of the function they came from.
2. A static initializer (_GLOBAL__sub_I_*, run from .init_array at start-up on every CPU).

Both must run on the baseline x86-64 (the scalar level is what runs on a CPU without AVX2). So in an
*_avx2 or *_avx512 object no weak function (with its pieces) and no static initializer may contain a
VEX-encoded instruction (first opcode byte 0xc4/0xc5, in 64-bit mode only ever VEX; opmask k*
instructions are VEX too) or an EVEX-encoded one (first opcode byte 0x62, in 64-bit mode only EVEX).

Usage: isa_isolation_test.py [--self-test CXX] LIB.a [LIB.a ...]
Checks every *_avx2*.o and *_avx512*.o member. With --self-test, first compiles small objects that
break each rule (and one that keeps them) with CXX and requires the checker to tell them apart, so
that the check itself is shown able to fail. Exit 0 when clean, 1 with the offending functions listed.
"""
import os
import re
import subprocess
import sys
import tempfile

PREFIXES = {"66", "67", "f2", "f3", "2e", "36", "3e", "26", "64", "65"}
SPLIT_PIECE = re.compile(r"^(.+?)\.(cold|part\.\d+|isra\.\d+|constprop\.\d+)(\..*)?$")


def level_of(member):
    if "_avx512" in member:
        return "avx512"
    if "_avx2" in member:
        return "avx2"
    return None


def forbidden(first_byte):
    """Whether one instruction (its first opcode byte after legacy prefixes) is VEX or EVEX."""
    return first_byte in ("62", "c4", "c5")


def members_with_code(lib):
    """{member: {function: [(first opcode byte, instruction text)]}} for the ISA members."""
    out = subprocess.run(["objdump", "-d", "-w", lib], check=True, capture_output=True, text=True).stdout
    result, member, func = {}, None, None
    for line in out.splitlines():
        m = re.match(r"^(\S+\.o):\s+file format", line)
        if m:
            member = m.group(1) if level_of(m.group(1)) else None
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
        m = re.match(r"^\s+[0-9a-f]+:\t((?:[0-9a-f]{2} )+)\s*\t?(.*)$", line)
        if m and func:
            raw = m.group(1).split()
            i = 0
            while i < len(raw) - 1 and raw[i] in PREFIXES:
                i += 1
            result[member][func].append((raw[i], m.group(2).strip()))
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


def owner(func):
    """The function a split-off piece belongs to (itself when it is not a piece)."""
    m = SPLIT_PIECE.match(func)
    return m.group(1) if m else func


# Objects that break one rule each, and one that keeps them: (file name, flags, source, must fail).
SELF_TEST = [
    ("weak_evex_avx512.cpp", "-mavx512f",
     "#include <immintrin.h>\n"
     "__attribute__((noinline)) inline void add16(float* a, const float* b) { _mm512_storeu_ps(a, "
     "_mm512_add_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(b))); }\n"
     "void use(float* a, const float* b) { add16(a, b); }\n", True),
    ("weak_opmask_avx512.cpp", "-mavx512f",
     "#include <immintrin.h>\n"
     "__attribute__((noinline)) inline unsigned mask_and(unsigned a, unsigned b) { return _cvtmask16_u32(_kand_mask16(_cvtu32_mask16(a), "
     "_cvtu32_mask16(b))); }\n"
     "unsigned use(unsigned a, unsigned b) { return mask_and(a, b); }\n", True),
    ("init_avx512.cpp", "-mavx512f",
     "#include <immintrin.h>\n"
     "static float table[16] = {};\n"
     "struct Init { Init() { _mm512_storeu_ps(table, _mm512_set1_ps(2.0f)); } } init;\n"
     "float get(int i) { return table[i]; }\n", True),
    ("weak_vex_avx2.cpp", "-mavx2 -mfma",
     "#include <immintrin.h>\n"
     "__attribute__((noinline)) inline void add8(float* a, const float* b) { _mm256_storeu_ps(a, _mm256_add_ps(_mm256_loadu_ps(a), "
     "_mm256_loadu_ps(b))); }\n"
     "void use(float* a, const float* b) { add8(a, b); }\n", True),
    ("clean_avx512.cpp", "-mavx512f",
     "#include <immintrin.h>\n"
     "namespace { void add16(float* a, const float* b) { _mm512_storeu_ps(a, _mm512_add_ps(_mm512_loadu_ps(a), "
     "_mm512_loadu_ps(b))); } }\n"
     "void use(float* a, const float* b) { add16(a, b); }\n", False),
]


def self_test(cxx):
    """Compiles SELF_TEST's objects and checks that the checker flags exactly the ones it should."""
    ok = True
    for piece, root in [("_Z3foov.cold", "_Z3foov"), ("_Z3foov.part.0", "_Z3foov"), ("_Z3foov.isra.0.cold", "_Z3foov"),
                        ("_Z3foov.constprop.1", "_Z3foov"), ("_Z3foov", "_Z3foov")]:
        if owner(piece) != root:
            print(f"SELF-TEST FAIL owner({piece}) = {owner(piece)}, not {root}")
            ok = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags, src, must_fail in SELF_TEST:
            cpp = os.path.join(tmp, name)
            with open(cpp, "w") as f:
                f.write(src)
            obj, lib = cpp + ".o", os.path.join(tmp, name + ".a")
            subprocess.run([cxx, "-O2", "-std=c++20", *flags.split(), "-c", cpp, "-o", obj], check=True)
            subprocess.run(["ar", "rcs", lib, obj], check=True)
            bad = check(lib, quiet=True)[1]
            if bool(bad) != must_fail:
                print(f"SELF-TEST FAIL {name}: expected {'a finding' if must_fail else 'none'}, got {bad}")
                ok = False
            else:
                print(f"self-test {name}: {'flagged' if bad else 'clean'}, as it should be")
    return ok


def check(lib, quiet=False):
    """({level: members checked}, [findings]) for one archive."""
    checked, bad = {"avx2": 0, "avx512": 0}, []
    code = members_with_code(lib)
    weak = weak_symbols(lib)
    for member, funcs in code.items():
        level = level_of(member)
        checked[level] += 1
        weak_here = weak.get(member, set())
        guarded = []
        for func, insns in funcs.items():
            root = owner(func)
            why = None
            if root in weak_here:
                why = "weak function" + ("" if root == func else f" {root}, its piece")
            elif func.startswith("_GLOBAL__sub_I_"):
                why = "static initializer"
            if why is None:
                continue
            guarded.append(func)
            hits = [t for b, t in insns if forbidden(b)]
            if hits:
                bad.append(f"{lib}:{member}: {why} {func} contains VEX/EVEX instructions, e.g. {hits[0]}")
        if not quiet:
            print(f"{member} ({level}): {len(funcs)} functions, {len(guarded)} checked (weak, their pieces, "
                  f"static initializers)")
    return checked, bad


def main(args):
    if args[:1] == ["--self-test"]:
        if not self_test(args[1]):
            return 1
        args = args[2:]
    checked, bad = {"avx2": 0, "avx512": 0}, []
    for lib in args:
        c, b = check(lib)
        bad += b
        for k in checked:
            checked[k] += c[k]
    if checked["avx512"] == 0 or checked["avx2"] == 0:
        print("no *_avx2 or no *_avx512 object found in", args,
              "- nothing to check is a failure of the build, not a pass")
        return 1
    for b in bad:
        print("FAIL", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
