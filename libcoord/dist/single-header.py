#!/usr/bin/env python3
"""Writes the installed, single-file coord.h.

coord.h includes coord_proto.h at the top of its implementation section;
this pastes coord_proto.h there instead, without coord_proto.h's own
include of coord.h (and the comment that explains it), which would be
circular in one file.  Anything else unexpected stops the build: the
result must include no header of this project.

usage: single-header.py coord.h coord_proto.h OUTPUT
"""
import sys

PROTO_INCLUDE = '#include "coord_proto.h"\n'
BACK_INCLUDE = '#include "coord.h"\n'


def fail(msg):
    sys.exit('single-header.py: ' + msg)


def proto_body(lines):
    """coord_proto.h without its #include "coord.h" and the comment on it."""
    if lines.count(BACK_INCLUDE) != 1:
        fail('coord_proto.h: expected one line ' + BACK_INCLUDE.strip())
    at = lines.index(BACK_INCLUDE)
    start = at
    if at > 0 and lines[at - 1].rstrip().endswith('*/'):
        start = at - 1
        while not lines[start].lstrip().startswith('/*'):
            start -= 1
            if start < 0:
                fail('coord_proto.h: unterminated comment before ' + BACK_INCLUDE.strip())
    return lines[:start] + lines[at + 1:]


def main(argv):
    if len(argv) != 4:
        fail('usage: single-header.py coord.h coord_proto.h OUTPUT')
    with open(argv[1], encoding='utf-8') as f:
        header = f.readlines()
    with open(argv[2], encoding='utf-8') as f:
        proto = proto_body(f.readlines())
    if header.count(PROTO_INCLUDE) != 1:
        fail('coord.h: expected one line ' + PROTO_INCLUDE.strip())
    at = header.index(PROTO_INCLUDE)
    out = (header[:at]
           + ['/* ---- coord_proto.h, pasted here when coord.h is installed ---- */\n']
           + proto
           + ['/* ---- end of coord_proto.h ---- */\n']
           + header[at + 1:])
    for line in out:
        if line.lstrip().startswith('#include "'):
            fail('the result still includes ' + line.strip())
    with open(argv[3], 'w', encoding='utf-8') as f:
        f.writelines(out)


if __name__ == '__main__':
    main(sys.argv)
