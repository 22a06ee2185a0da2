#!/usr/bin/env python3
"""Writes coord.h(3)'s scdoc source: the page template with its error table.

The table is made from the COORD_ERRORS(X) X-macro list of coord.h, the one
place the codes are defined, so the page can never name a code, a value or
a message that the library does not have.  Every X(...) entry of the list
must parse; a list that yields no entry, or a template without the
@COORD_ERRORS@ line, is an error, never an empty table.

usage: errors-table.py coord.h coord.h.3.scd.in coord.h.3.scd
"""
import re
import sys

ENTRY = re.compile(r'^\s*X\(\s*(E[A-Z]+)\s*,\s*(-\d+)\s*,\s*"((?:[^"\\]|\\.)*)"\s*\)\s*\\?\s*$')


def errors(header):
    """The (name, value, message) entries of COORD_ERRORS, in order."""
    lines = open(header, encoding='utf-8').read().split('\n')
    start = [i for i, l in enumerate(lines) if l.startswith('#define COORD_ERRORS(X)')]
    if len(start) != 1:
        sys.exit(f'{header}: expected one "#define COORD_ERRORS(X)", found {len(start)}')
    out = []
    i = start[0]
    while lines[i].rstrip().endswith('\\'):
        i += 1
        line = lines[i]
        if not line.strip():
            continue
        m = ENTRY.match(line)
        if not m:
            sys.exit(f'{header}:{i + 1}: cannot read this COORD_ERRORS entry: {line.strip()}')
        out.append((m.group(1), int(m.group(2)), m.group(3).replace('\\"', '"')))
    if not out:
        sys.exit(f'{header}: COORD_ERRORS has no entries')
    return out


def scdoc_text(s):
    """s with scdoc's markup characters escaped."""
    return re.sub(r'([\\*_])', r'\\\1', s)


def table(entries):
    rows = ['[[ *Code*', ':] *Value*', ':< *Meaning*']
    for name, value, text in entries:
        rows += [f'|  COORD\\_{name}', f':  {value}', f':  {scdoc_text(text)}']
    return '\n'.join(rows)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().split('\n')[-1])
    header, template, output = sys.argv[1:]
    src = open(template, encoding='utf-8').read()
    if src.count('\n@COORD_ERRORS@\n') != 1:
        sys.exit(f'{template}: expected one line "@COORD_ERRORS@"')
    src = src.replace('\n@COORD_ERRORS@\n', '\n' + table(errors(header)) + '\n')
    with open(output, 'w', encoding='utf-8') as f:
        f.write(src)


if __name__ == '__main__':
    main()
