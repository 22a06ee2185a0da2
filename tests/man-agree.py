#!/usr/bin/python3
"""The manual pages agree with the programs.

coordctl(1):
  - every command and every long option that `coordctl --help` (and each
    command's --help, where one exists) shows is documented: a command as
    a "## COMMAND" section of COMMANDS, its options as items of it, the
    global ones as items of OPTIONS;
  - every command and option documented there is accepted by coordctl:
    an invocation of it (EXERCISE) against a broker started here does not
    exit with the usage status 64;
  - every key that `list --json` prints is documented in its section of
    JSON OUTPUT with the JSON type it has, and every key documented there
    is printed by some run here.
coordd(8):
  - every long option of `coordd --help` is an item of OPTIONS, and every
    option there is accepted: `coordd OPTION [VALUE] --help` exits 0.
coord.h(3):
  - every function coord.h declares is named in the page's source, and
    the error table built into it holds every entry of COORD_ERRORS.

Documented options that the programs do not accept yet are in PENDING
(and JSON keys not printed yet in PENDING_KEYS): the test skips them, and
fails once one of them is accepted, so that it leaves the list.  Any other
difference fails and names the command, option or key.

usage: man-agree.py SOURCE_DIR BUILT_COORD_H_SCD   ($COORD_TEST_COORDD and
       $COORD_TEST_COORDCTL name the binaries)
"""
import fcntl
import grp
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

EX_USAGE = 64

# Documented options and commands that the programs do not have yet: (command,
# option), command None for a global option, option None for a command.
# Empty this as they land.
PENDING = {
    'coordctl': set(),
    'coordd': set(),
}

# Keys documented in a JSON section that the programs do not print yet
# (KEY_hex stands for every KEY_hex sibling of a string that is not UTF-8).
PENDING_KEYS = {}

# One invocation per documented command and option of coordctl(1), run
# with --dir INSTANCE in front (unless it starts with --dir) and
# COORD_NO_AUTOSTART=1.  Only the exit status 64 counts as refused.
# {key} is a key, {tmp} the test's directory, {pid} this process (which
# holds no lease), {group} its group.  'stream': a command that keeps
# running: accepted once it prints a line.
EXERCISE = {
    (None, '--dir'): ['--dir', '{inst}', 'status'],
    (None, '--create'): ['--dir', '{tmp}/created', '--create', 'status'],
    (None, '--help'): ['--help'],
    (None, '-h'): ['-h'],
    ('help', None): ['help'],
    ('status', None): ['status'],
    ('status', '--json'): ['status', '--json'],
    ('list', None): ['list'],
    ('list', '--json'): ['list', '--json'],
    ('list', '--resource'): ['list', '--resource', '{key}'],
    ('list', '--pid'): ['list', '--pid', '{pid}'],
    ('list', '--mode'): ['list', '--mode', 'write'],
    ('list', '--waiting'): ['list', '--waiting'],
    ('list', '--wide'): ['list', '--wide'],
    ('show', None): ['show', '{key}'],
    ('show', '--json'): ['show', '--json', '{key}'],
    ('show', '--wide'): ['show', '--wide', '{key}'],
    ('run', None): ['run', '--read', '{key}', '--', 'true'],
    ('run', '--read'): ['run', '--read', '{key}', '--', 'true'],
    ('run', '--write'): ['run', '--write', '{key}', '--', 'true'],
    ('run', '--timeout'): ['run', '--read', '{key}', '--timeout', '5', '--', 'true'],
    ('run', '--label'): ['run', '--read', '{key}', '--label', 'man-agree', '--', 'true'],
    ('checkpoint', None): ['checkpoint', '{key}'],
    ('policy', None): ['policy', '{key}', 'none'],
    ('policy', '--timeout'): ['policy', '{key}', 'none', '--timeout', '5'],
    ('limit', None): ['limit', '{key}'],
    ('limit', '--max-hold'): ['limit', '{key}', '--max-hold', '0'],
    ('limit', '--recall-grace'): ['limit', '{key}', '--recall-grace', '0'],
    ('revoke', None): ['revoke', '{key}'],
    ('revoke', '--grace'): ['revoke', '--grace', '0.1', '{key}'],
    ('revoke', '--pid'): ['revoke', '--pid', '{pid}'],
    ('doctor', None): ['doctor', '{tmp}/absent.db'],
    ('setup-shared', None): ['setup-shared', '--dir', '{tmp}/shared', '--group', '{group}'],
    ('setup-shared', '--dir'): ['setup-shared', '--dir', '{tmp}/shared'],
    ('setup-shared', '--group'): ['setup-shared', '--dir', '{tmp}/shared', '--group', '{group}'],
    ('share', None): ['share', '{tmp}/marked/'],
    ('share', '--dir'): ['share', '{tmp}/marked/', '--dir', '{inst}'],
    ('watch', None): {'stream': ['watch', '--json']},
    ('watch', '--json'): {'stream': ['watch', '--json']},
    ('metrics', None): ['metrics'],
}

# Values for the placeholders of coordd(8)'s options.
COORDD_VALUES = {
    'DIR': '{inst}', 'N': '100', 'PATH': '/nonexistent/libduckdb.so', 'MS': '1000',
    'MB': '64', 'NAME': '{group}', 'ADDR:PORT': '127.0.0.1:9187', 'journal|file|stderr': 'stderr',
}

LONG_OPT = re.compile(r'(?<![\w-])(--[a-z][a-z0-9-]*)')
ITEM_OPT = re.compile(r'\*(--?[a-zA-Z][a-z0-9-]*)\*')

failures = []


def fail(msg):
    failures.append(msg)
    print('FAIL: ' + msg)


# ---- reading scdoc sources ----

def scd_sections(path):
    """{(section, subsection): [lines]} of an scdoc file; subsection '' for
    the text before the first "## "."""
    out, sec, sub = {}, '', ''
    for line in open(path, encoding='utf-8').read().split('\n'):
        if line.startswith('; '):
            continue
        if line.startswith('# '):
            sec, sub = line[2:].strip(), ''
        elif line.startswith('## '):
            sub = line[3:].strip()
        else:
            out.setdefault((sec, sub), []).append(line)
    return out


def item_options(lines):
    """The options that items of these lines define: `*--opt* ...` at
    column 0, with their placeholder (`_N_`, '' if none)."""
    out = {}
    for line in lines:
        if not line.startswith('*-'):
            continue
        arg = re.sub(r'[_*]', '', ITEM_OPT.sub('', line.split(',')[-1])).strip()
        for opt in ITEM_OPT.findall(line):
            out[opt] = arg
    return out


def json_keys(lines):
    """{key: {types}} of the items `*key* (type or type)` of a JSON section."""
    out = {}
    for line in lines:
        m = re.match(r'^\t*\*([A-Za-z_]+)\* \(([a-z ]+)\)\s*$', line)
        if m:
            out.setdefault(m.group(1), set()).update(m.group(2).split(' or '))
    return out


# ---- running the programs ----

def run(argv, env, timeout=60):
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, errors='replace', timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def stream_accepted(argv, env, poke):
    """(accepted, why) for argv, a command that keeps running and prints
    as things happen: accepted once it prints a line, refused if it exits
    with 64.  poke() makes something happen, once a second until then (a
    reader may start after the first)."""
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        next_poke = 0
        while time.monotonic() < deadline:
            if p.poll() is not None:
                return p.returncode != EX_USAGE, p.returncode
            if time.monotonic() >= next_poke:
                poke()
                next_poke = time.monotonic() + 1
            r, _, _ = select.select([p.stdout], [], [], 0.1)
            if r and p.stdout.readline():
                return True, None
        return False, 'nothing printed within 30 s while leases were taken'
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


def help_blocks(text):
    """Parses `coordctl --help`: ({command: {options}}, global options of
    the usage line, options of the text after the command list)."""
    lines = text.split('\n')
    commands, cur, tail = {}, None, set()
    first = LONG_OPT.findall(lines[0])
    in_list = False
    for line in lines[1:]:
        m = re.match(r'^  ([a-z][a-z-]*)(\s|$)', line)
        if m:
            cur, in_list = m.group(1), True
            commands.setdefault(cur, set()).update(LONG_OPT.findall(line[m.end(1):]))
        elif in_list and line.startswith('    ') and cur:
            commands[cur].update(LONG_OPT.findall(line))
        elif in_list and not line.strip():
            in_list, cur = False, None
        else:
            tail.update(LONG_OPT.findall(line))
    return commands, set(first), tail


def command_help_options(text):
    """The options a command's --help defines: those of its usage line
    (and the indented lines that continue it), and those that start a line
    of the option list ("  --opt ARG   what it does"); options named in the
    prose (`coordctl list --wide`) are not the command's."""
    out, in_usage = set(), False
    for line in text.split('\n'):
        if line.startswith('usage:'):
            in_usage = True
            out.update(LONG_OPT.findall(line))
        elif in_usage and line.startswith('   '):
            out.update(LONG_OPT.findall(line))
        else:
            in_usage = False
            m = re.match(r'^\s+(-.*?)(\s{2,}|$)', line)
            if m:
                out.update(LONG_OPT.findall(m.group(1)))
    return out


def check_coordctl(src, tmp, env, fill):
    page = os.path.join(src, 'doc', 'coordctl.1.scd')
    sections = scd_sections(page)
    pending = PENDING['coordctl']
    man_global = set(item_options(sections.get(('OPTIONS', ''), [])))
    man_cmds = {sub: set(item_options(lines))
                for (sec, sub), lines in sections.items() if sec == 'COMMANDS' and sub}
    ctl = os.environ['COORD_TEST_COORDCTL']

    rc, out, err = run([ctl, '--help'], env)
    if rc != 0 or 'usage:' not in out:
        fail(f'coordctl --help exited {rc} without a usage on stdout: {err.strip()}')
        return
    help_cmds, help_global, help_tail = help_blocks(out)
    if not help_cmds:
        fail('found no command in coordctl --help')
    for cmd, opts in sorted(help_cmds.items()):
        if cmd not in man_cmds:
            fail(f'coordctl --help lists the command "{cmd}"; coordctl(1) has no "## {cmd}" '
                 'section under COMMANDS')
            continue
        for opt in sorted(opts - man_cmds[cmd] - man_global):
            fail(f'coordctl --help shows "{cmd} {opt}"; coordctl(1) has no item for it under '
                 f'"## {cmd}"')
        # The command's own --help, where there is one.
        rc, cout, _ = run([ctl, cmd, '--help'], env)
        if rc == 0 and cout.strip():
            for opt in sorted(command_help_options(cout) - man_cmds[cmd] - man_global):
                fail(f'coordctl {cmd} --help shows {opt}; coordctl(1) has no item for it under '
                     f'"## {cmd}"')
    for opt in sorted(help_global - man_global):
        fail(f'coordctl --help shows the global option {opt}; coordctl(1) has no item for it '
             'under OPTIONS')
    every_man_opt = man_global.union(*man_cmds.values())
    for opt in sorted(help_tail - every_man_opt):
        fail(f'coordctl --help mentions {opt}; coordctl(1) documents no such option')

    # Everything documented is accepted.
    documented = [(None, o) for o in sorted(man_global)]
    for cmd in sorted(man_cmds):
        documented += [(cmd, None)] + [(cmd, o) for o in sorted(man_cmds[cmd])]
    for key in documented:
        name = ' '.join(k for k in key if k)
        how = EXERCISE.get(key)
        if how is None:
            fail(f'coordctl(1) documents "{name}" but EXERCISE in {__file__} has no invocation '
                 'to check it: add one')
            continue
        argv = how['stream'] if isinstance(how, dict) else how
        argv = [fill(a) for a in argv]
        if key[0] and argv[0] != '--dir':
            argv = ['--dir', fill('{inst}')] + argv
        if isinstance(how, dict):
            ok, why = stream_accepted([ctl] + argv, env, lambda: run(
                [ctl, '--dir', fill('{inst}'), 'run', '--read', fill('{key}'), '--', 'true'], env))
            detail = f'exit status {why}' if isinstance(why, int) else why
        else:
            rc, _, err = run([ctl] + argv, env)
            ok, detail = rc != EX_USAGE, f'exit status {rc}: {err.strip()[:300]}'
        if key in pending:
            if ok:
                fail(f'"{name}" is pending but coordctl accepts it now (coordctl '
                     f'{" ".join(argv)}): remove it from PENDING in {__file__}')
            else:
                print(f'pending: {name}')
            continue
        if ok:
            print(f'ok: coordctl accepts "{name}"')
        else:
            fail(f'coordctl(1) documents "{name}" but coordctl {" ".join(argv)} refuses it '
                 f'({detail})')
    for key in sorted(pending, key=str):
        if key not in documented:
            fail(f'PENDING holds {key}, which coordctl(1) does not document')
    return sections


# ---- the --json outputs ----

def json_type(v):
    if v is None:
        return 'null'
    if isinstance(v, bool):
        return 'boolean'
    if isinstance(v, (int, float)):
        return 'number'
    return {str: 'string', dict: 'object', list: 'array'}[type(v)]


def walk(v, seen):
    """Adds every key of v, at any depth, with the JSON types of its
    values, to seen.  A KEY_hex sibling counts as "KEY_hex"."""
    if isinstance(v, dict):
        for k, x in v.items():
            if k.endswith('_hex') and k[:-4] in v:
                k = 'KEY_hex'
            seen.setdefault(k, set()).add(json_type(x))
            walk(x, seen)
    elif isinstance(v, list):
        for x in v:
            walk(x, seen)


def json_of(argv, env, statuses=(0,)):
    """The JSON object that coordctl argv prints; a failure if it exits
    otherwise or prints something else."""
    ctl = os.environ['COORD_TEST_COORDCTL']
    rc, out, err = run([ctl] + argv, env)
    if rc not in statuses:
        raise SystemExit(f'FAIL: coordctl {" ".join(map(str, argv))} exited {rc}: {err}')
    try:
        return json.loads(out)
    except ValueError as e:
        raise SystemExit(f'FAIL: coordctl {" ".join(map(str, argv))} printed no JSON ({e}): {out!r}')


def wait_for(what, cond, deadline):
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f'FAIL: {what}')
        time.sleep(0.02)


def json_outputs(tmp, env, fill, wanted):
    """{"CMD --json": [objects]} for the sections in wanted, in the states
    that print every key: a holder recalled by a waiter and kept waiting by
    a kernel lock this process holds, with a label that is not UTF-8; a
    holder of a key; a file checkpointed by an exec policy; no broker at
    all.  `watch --json` reads the events of all that."""
    ctl = os.environ['COORD_TEST_COORDCTL']
    inst = fill('{inst}')
    out = {sub: [] for sub in wanted}
    watch = None
    if 'watch --json' in wanted:
        # Unbuffered: select() below must see every line not read yet.
        watch = subprocess.Popen([ctl, '--dir', inst, 'watch', '--json'], env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0)
    try:
        return scenario(ctl, inst, tmp, env, out, watch)
    finally:
        if watch and watch.poll() is None:
            watch.kill()
            watch.wait()


def scenario(ctl, inst, tmp, env, out, watch):
    """The body of json_outputs(): fills out and returns it."""
    nobroker = os.path.join(tmp, 'no-broker')
    db = os.path.join(tmp, 'locked.db')
    ckpt = os.path.join(tmp, 'checkpointed.db')
    open(db, 'w').close()
    open(ckpt, 'w').close()
    procs = []
    lock = os.open(db, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    deadline = time.monotonic() + 60
    try:
        marker = os.path.join(tmp, 'key-granted')
        procs.append(subprocess.Popen([ctl, '--dir', inst, 'run', '--read', 'key:man-agree-held',
                                       '--', 'sh', '-c', 'touch "$0"; exec sleep 600', marker],
                                      env=env))
        procs.append(subprocess.Popen([ctl.encode(), b'--dir', inst.encode(), b'run', b'--write',
                                       db.encode(), b'--label', b'man-agree-\xff', b'--', b'true'],
                                      env=env))
        wait_for('list --json: the holder of the file never showed its kernel-lock wait',
                 lambda: os.path.exists(marker) and any(
                     l['resource'] == db and l['kernel_lock_holder']
                     for l in json_of(['--dir', inst, 'list', '--json'], env)['leases']),
                 deadline)
        procs.append(subprocess.Popen([ctl, '--dir', inst, 'run', '--read', db, '--timeout',
                                       '60', '--', 'true'], env=env))
        wait_for('list --json: the waiter never queued behind the recalled holder',
                 lambda: (lambda got: got['waiters'] and any(
                     l['recalled_ms'] is not None for l in got['leases']))(
                     json_of(['--dir', inst, 'list', '--json'], env)),
                 deadline)
        for sub, argv in (('list --json', ['list', '--json']),
                          ('show --json', ['show', '--json', db]),
                          ('status --json', ['status', '--json'])):
            if sub in out:
                out[sub].append(json_of(['--dir', inst] + argv, env))
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        for p in procs[1:]:
            p.wait(timeout=60)
        procs[0].terminate()
        procs[0].wait(timeout=60)
    if 'show --json' in out:
        for argv in (['policy', ckpt, 'exec:true'], ['checkpoint', ckpt]):
            rc, _, err = run([ctl, '--dir', inst] + argv, env)
            if rc != 0:
                fail(f'coordctl {" ".join(argv)} exited {rc}: {err.strip()}')
        got = json_of(['--dir', inst, 'show', '--json', ckpt], env)
        if not got.get('last_checkpoint'):
            fail(f'show --json: no last_checkpoint after `coordctl checkpoint {ckpt}`: {got}')
        out['show --json'].append(got)
    stop_broker_of(nobroker, env)
    if 'list --json' in out:
        got = json_of(['--dir', nobroker, 'list', '--json'], env)
        if got.get('broker') is not False:
            fail(f'list --json without a broker printed {got}')
        out['list --json'].append(got)
    if 'status --json' in out:
        out['status --json'].append(json_of(['--dir', nobroker, 'status', '--json'], env,
                                            statuses=(69,)))
    if watch:
        # Everything above made events; read them up to the last release.
        while time.monotonic() < deadline:
            r, _, _ = select.select([watch.stdout], [], [], 0.1)
            if not r:
                if any(e.get('event') == 'release' for e in out['watch --json']):
                    break
                continue
            line = watch.stdout.readline()
            if not line:
                break
            out['watch --json'].append(json.loads(line.decode('utf-8')))
        if not out['watch --json']:
            fail('watch --json printed no event')
    return out


def stop_broker_of(d, env):
    """Makes d an instance whose broker is not running: one is started
    there and stopped (SIGTERM), and waited for."""
    rc, _, err = run([os.environ['COORD_TEST_COORDD'], '--dir', d, '--daemon'], env)
    if rc != 0:
        raise SystemExit(f'FAIL: coordd --dir {d} --daemon exited {rc}: {err}')
    pid = broker_pid(d)
    os.kill(pid, 15)
    wait_for(f'coordd {pid} did not exit on SIGTERM', lambda: not alive(pid),
             time.monotonic() + 60)


def broker_pid(d):
    return int(open(os.path.join(d, 'coordd.lock')).read().split()[0])


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def check_json(sections, tmp, env, fill):
    pending = PENDING['coordctl']
    documented = {sub: lines for (sec, sub), lines in sections.items()
                  if sec == 'JSON OUTPUT' and sub}
    wanted = set()
    for sub in sorted(documented):
        if (sub.split()[0], '--json') in pending:
            print(f'pending: the schema of {sub}')
        else:
            wanted.add(sub)
    outputs = json_outputs(tmp, env, fill, wanted)
    for sub in sorted(wanted):
        doc = json_keys(documented[sub])
        pending_keys = set(PENDING_KEYS.get(sub, set()))
        # "as in *list --json*": the leases and waiters of list's schema.
        if sub != 'list --json' and 'as in *list --json*' in '\n'.join(documented[sub]):
            for key, types in json_keys(documented.get('list --json', [])).items():
                doc.setdefault(key, set()).update(types)
            pending_keys |= PENDING_KEYS.get('list --json', set())
            # list's own top-level keys need not appear here
            for key in ('broker', 'dir'):
                if key not in json_keys(documented[sub]):
                    doc.pop(key, None)
        seen = {}
        for o in outputs[sub]:
            walk(o, seen)
        for key, types in sorted(seen.items()):
            if key in pending_keys:
                fail(f'{sub} prints "{key}" now: remove it from PENDING_KEYS in {__file__}')
            elif key not in doc:
                fail(f'{sub} prints the key "{key}" ({"/".join(sorted(types))}); coordctl(1) '
                     f'does not document it under "## {sub}"')
            elif types - doc[key]:
                fail(f'{sub} prints "{key}" as {"/".join(sorted(types - doc[key]))}; '
                     f'coordctl(1) says ({" or ".join(sorted(doc[key]))})')
            else:
                print(f'ok: {sub} key "{key}" documented as {"/".join(sorted(doc[key]))}')
        for key in sorted(set(doc) - set(seen)):
            if key in pending_keys:
                print(f'pending: {sub} key "{key}"')
            else:
                fail(f'coordctl(1) documents the key "{key}" of {sub}, which no run printed')
    for sub in ('list --json', 'show --json', 'status --json', 'watch --json'):
        if sub not in documented:
            fail(f'coordctl(1) has no "## {sub}" section under JSON OUTPUT')


# ---- coordd ----

def check_coordd(src, env, fill):
    page = os.path.join(src, 'doc', 'coordd.8.scd')
    man = item_options(scd_sections(page).get(('OPTIONS', ''), []))
    coordd = os.environ['COORD_TEST_COORDD']
    pending = PENDING['coordd']
    rc, out, err = run([coordd, '--help'], env)
    if rc != 0 or 'usage:' not in out:
        fail(f'coordd --help exited {rc} without a usage on stdout: {err.strip()}')
        return
    for opt in sorted(set(LONG_OPT.findall(out)) - set(man)):
        fail(f'coordd --help shows {opt}; coordd(8) has no item for it under OPTIONS')
    for opt, arg in sorted(man.items()):
        argv = [coordd, opt]
        if arg:
            if arg not in COORDD_VALUES:
                fail(f'coordd(8) gives {opt} the argument {arg}, which has no value in '
                     f'COORDD_VALUES of {__file__}')
                continue
            argv.append(fill(COORDD_VALUES[arg]))
        if opt not in ('--help', '-h'):
            argv.append('--help')
        rc, _, err = run(argv, env)
        if opt in pending:
            if rc == 0:
                fail(f'{opt} is pending but coordd accepts it now: remove it from PENDING in '
                     f'{__file__}')
            else:
                print(f'pending: coordd {opt}')
        elif rc == 0:
            print(f'ok: coordd accepts {opt}')
        else:
            fail(f'coordd(8) documents {opt} but `{" ".join(argv[1:])}` exits {rc}: '
                 f'{err.strip()[:300]}')
    for opt in sorted(pending - set(man)):
        fail(f'PENDING holds coordd {opt}, which coordd(8) does not document')


# ---- coord.h(3) ----

def check_coord_h(src, built_scd):
    header = open(os.path.join(src, 'libcoord', 'coord.h'), encoding='utf-8').read()
    template = open(os.path.join(src, 'doc', 'coord.h.3.scd.in'), encoding='utf-8').read()
    template = template.replace('\\', '')
    names = re.findall(r'^COORD_API\b[^;(]*?\b(coord_[a-z0-9_]+)\(', header, re.M)
    if len(names) < 10:
        fail(f'found only {len(names)} functions in coord.h')
    for name in names:
        if name + '(' not in template:
            fail(f'coord.h declares {name}(); coord.h(3) does not name it')
    print(f'ok: coord.h(3) names the {len(names)} functions of coord.h')
    errors = re.findall(r'^\s*X\((E[A-Z]+),\s*(-\d+),\s*"((?:[^"\\]|\\.)*)"\)', header, re.M)
    if len(errors) < 20:
        fail(f'found only {len(errors)} entries of COORD_ERRORS in coord.h')
    page = open(built_scd, encoding='utf-8').read().replace('\\', '')
    rows = re.findall(r'^\|  COORD_(E[A-Z]+)\n:  (-\d+)\n:  (.*)$', page, re.M)
    table = {n: (v, t) for n, v, t in rows}
    for name, value, text in errors:
        text = text.replace('\\"', '"').replace('\\', '')
        if table.get(name) != (value, text):
            fail(f'coord.h(3)\'s error table has {name} as {table.get(name)}; coord.h says '
                 f'({value}, "{text}")')
    for name in sorted(set(table) - {n for n, _, _ in errors}):
        fail(f'coord.h(3)\'s error table has {name}, which COORD_ERRORS does not')
    print(f'ok: coord.h(3)\'s error table is the {len(errors)} entries of COORD_ERRORS')


def main():
    src, built_scd = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix='coord-man-agree-')
    inst = os.path.join(tmp, 'inst')
    for d in ('home', 'marked'):
        os.mkdir(os.path.join(tmp, d))
    env = {k: v for k, v in os.environ.items() if k != 'COORD_DIR'}
    env.update(HOME=os.path.join(tmp, 'home'), XDG_STATE_HOME=os.path.join(tmp, 'home', 'state'),
               COORD_NO_AUTOSTART='1', COORD_BROKER=os.environ['COORD_TEST_COORDD'], LC_ALL='C')
    values = {'inst': inst, 'tmp': tmp, 'key': 'key:man-agree', 'pid': str(os.getpid()),
              'group': grp.getgrgid(os.getgid()).gr_name}

    def fill(s):
        return s.format(**values)

    rc, _, err = run([os.environ['COORD_TEST_COORDD'], '--dir', inst, '--daemon'], env)
    if rc != 0:
        print(f'FAIL: coordd --daemon exited {rc}: {err}')
        sys.exit(1)
    try:
        check_coord_h(src, built_scd)
        check_coordd(src, env, fill)
        sections = check_coordctl(src, tmp, env, fill)
        if sections:
            check_json(sections, tmp, env, fill)
    finally:
        try:
            os.kill(broker_pid(inst), 15)
        except (OSError, ValueError, IndexError):
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    pending = sorted(' '.join(k for k in key if k) for key in PENDING['coordctl'])
    print('pending (skipped): coordctl ' + ', '.join(pending) + '; coordd ' +
          ', '.join(sorted(PENDING['coordd'])))
    print(f'{len(failures)} failed')
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
