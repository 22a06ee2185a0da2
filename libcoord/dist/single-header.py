#!/usr/bin/env python3
"""Writes the installed, single-file coord.h.

The result is coord.h (the public API, the manual), followed by the
implementation: everything in libcoord.c below its marker line, with
coord_proto.h pasted in place of its #include and without coord_proto.h's
own include of coord.h (and the comment that explains it).  Anything
unexpected stops the build: the result must include no header of this
project.

usage: single-header.py coord.h coord_proto.h libcoord.c OUTPUT
"""
import sys

PROTO_INCLUDE = '#include "coord_proto.h"\n'
BACK_INCLUDE = '#include "coord.h"\n'
MARKER = '/* ---- the implementation section of the single-file coord.h ---- */\n'


def fail(msg):
    sys.exit('single-header.py: ' + msg)


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.readlines()


def one(lines, line, what):
    if lines.count(line) != 1:
        fail(what + ': expected one line ' + line.strip())
    return lines.index(line)


def proto_body(lines):
    """coord_proto.h without its #include "coord.h" and the comment on it."""
    at = one(lines, BACK_INCLUDE, 'coord_proto.h')
    start = at
    if at > 0 and lines[at - 1].rstrip().endswith('*/'):
        start = at - 1
        while not lines[start].lstrip().startswith('/*'):
            start -= 1
            if start < 0:
                fail('coord_proto.h: unterminated comment before ' + BACK_INCLUDE.strip())
    return lines[:start] + lines[at + 1:]


def main(argv):
    if len(argv) != 5:
        fail('usage: single-header.py coord.h coord_proto.h libcoord.c OUTPUT')
    header, proto, impl = read(argv[1]), proto_body(read(argv[2])), read(argv[3])
    impl = impl[one(impl, MARKER, 'libcoord.c') + 1:]
    at = one(impl, PROTO_INCLUDE, 'libcoord.c')
    out = (header + ['\n']
           + impl[:at]
           + ['/* ---- coord_proto.h, pasted here when coord.h is installed ---- */\n']
           + proto
           + ['/* ---- end of coord_proto.h ---- */\n']
           + impl[at + 1:])
    for line in out:
        if line.lstrip().startswith('#include "'):
            fail('the result still includes ' + line.strip())
    with open(argv[4], 'w', encoding='utf-8') as f:
        f.writelines(out)


if __name__ == '__main__':
    main(sys.argv)
