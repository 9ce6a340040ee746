"""switchy against a real FreeSWITCH, side by side with the raw baseline.

    python3 benches/freeswitch.py RATE SECS HOLD [--only switchy|baseline]

Runs, in one invocation and against the same FreeSWITCH, with the same rate,
duration and hold:
  1. ../shared/tools/freeswitch/fs_baseline.py (the project's raw-socket
     client; run unchanged through runpy so that its originate latencies can
     be read for a p99, which it does not print);
  2. switchy-controller run --esl ... (embedded agent, SQLite CDRs).
Before each client: no other ESL client for 3 s (the baseline's own rule)
and no channel left; FreeSWITCH's sps and max_sessions raised to 10000 for
both (the baseline does it itself) and restored after.

For each it prints the achieved rate (answered calls per second between
3 s after the first launch and the end of launching: the baseline's
rate_ok_steady), setup latency p50/p95/p99/max (originate sent -> job
received, each client's own clock: the baseline's Python clock, switchy's
agent clock), failures, channels left over, and FreeSWITCH CPU-seconds per
answered call (utime+stime of the freeswitch process from /proc, over the
client's whole run). Then the ratios. Env: FS_ESL (127.0.0.1:8021),
FS_DEST (doggy@127.0.0.1:5080), BASELINE_EVENTS (the baseline's default),
SWITCHY_ARGS (extra `run` flags), SWITCHY_BIN.

--restart-fs restarts FreeSWITCH before each client (FS_PREFIX, default
/opt/freeswitch, the build script's PREFIX; FS_FLAGS as for the build
script's `start`), so that neither client inherits the other's drift: the
CPU FreeSWITCH spends per call grows over a session of runs.
"""
import argparse, io, json, os, runpy, sqlite3, subprocess, sys, time, contextlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from fslib import TOOLS, ThreadCpu, api, channels_left, cpumon, esl, fs_pid, host, port, restart_fs, settle  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument('rate', type=float)
ap.add_argument('secs', type=float)
ap.add_argument('hold', type=float)
ap.add_argument('--only', choices=['switchy', 'baseline'])
ap.add_argument('--out', help='append the JSON result here')
ap.add_argument('--switchy-first', action='store_true',
                help='run switchy before the baseline (the second client of an invocation measured '
                     'worse whichever it was: see docs/benchmarks.md)')
ap.add_argument('--pairs', type=int, default=1,
                help='invocations in a row, alternating which client goes first (starting as --switchy-first '
                     'says); prints the geometric mean of the FS CPU per call ratio with its 95%% interval')
ap.add_argument('--restart-fs', action='store_true',
                help='restart FreeSWITCH before each client (FS_PREFIX, default /opt/freeswitch)')
a = ap.parse_args()
dest = os.environ.get('FS_DEST', 'doggy@127.0.0.1:5080')
switchy_bin = os.environ.get('SWITCHY_BIN', os.path.join(ROOT, 'target', 'release', 'switchy-controller'))


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return round(v[min(len(v) - 1, int(round((len(v) - 1) * p)))], 2)


def lat_summary(ms):
    return dict(n=len(ms), p50=pct(ms, .5), p95=pct(ms, .95), p99=pct(ms, .99), max=pct(ms, 1.0))


def run_baseline(pid):
    argv = ['fs_baseline.py', '--rate', str(a.rate), '--secs', str(a.secs), '--hold', str(a.hold),
            '--dest', dest, '--fs-pid', str(pid), '--port', str(port), '--host', host]
    if os.environ.get('BASELINE_EVENTS'):
        argv += ['--events', os.environ['BASELINE_EVENTS']]
    old = sys.argv
    sys.argv = argv
    buf = io.StringIO()
    threads = ThreadCpu(pid).start()
    c0 = cpumon.cpu_s(pid)
    try:
        with contextlib.redirect_stdout(buf):
            g = runpy.run_path(os.path.join(TOOLS, 'fs_baseline.py'), run_name='__main__')
    finally:
        sys.argv = old
    c1 = cpumon.cpu_s(pid)
    esl_s, esl_n = threads.finish()
    res = json.loads(buf.getvalue()[buf.getvalue().index('{'):])
    ok = res['jobs_ok']
    return dict(
        client='baseline (fs_baseline.py)',
        rate=res['rate_ok_steady'], answered=ok, failed=res['jobs_fail'],
        aborted_overload_at_s=res['aborted_overload_at_s'],
        left_over=max(res['leftover_at_end'], channels_left()),
        setup_ms=lat_summary([x * 1000 for x in g['lat']]),
        setup_clock='the script\'s Python clock (send -> BACKGROUND_JOB)',
        fs_cpu_s=round(c1 - c0, 2),
        fs_cpu_ms_per_call=round(1000 * (c1 - c0) / ok, 3) if ok else None,
        fs_esl_threads=len(esl_n), fs_esl_thread_cpu_s=[round(x, 2) for x in esl_n], fs_esl_ms_per_call=round(1000 * esl_s / ok, 3) if ok else None,
        fs_cpu_pct_steady=res['cpu_fs_steady'], client_cpu_pct=res['cpu_script'],
        hangup_causes=res['hangup_causes'])


def run_switchy(pid):
    db = '/tmp/switchy-fs-bench-%d.db' % os.getpid()
    for suffix in ('', '-wal', '-shm'):
        with contextlib.suppress(FileNotFoundError):
            os.remove(db + suffix)
    limit = int(max(100, a.rate * (a.hold + 1) * 2))
    cmd = [switchy_bin, 'run', '--esl', esl, '--dest-url', dest, '--rate', str(a.rate),
           '--limit', str(limit), '--max-offered', str(int(round(a.rate * a.secs))),
           '--duration', str(a.hold), '--http', '127.0.0.1:0', '--db', 'sqlite://' + db,
           '--metrics-file', db + '.json'] + os.environ.get('SWITCHY_ARGS', '').split()
    import resource
    threads = ThreadCpu(pid).start()
    c0 = cpumon.cpu_s(pid)
    me0 = time.time()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, RUST_LOG='warn'))
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.time() - me0
    c1 = cpumon.cpu_s(pid)
    esl_s, esl_n = threads.finish()
    client_cpu_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode != 0:
        sys.exit('switchy run failed (%d):\n%s\n%s' % (p.returncode, p.stdout, p.stderr[-4000:]))
    m = json.load(open(db + '.json'))
    con = sqlite3.connect(db)
    rows = con.execute('SELECT caller_req_originate, failed, originate_sent_agent, originate_done_agent, '
                       'caller_answer, caller_hangup, hangup_cause FROM cdr').fetchall()
    con.close()
    t0 = min(r[0] for r in rows if r[0])
    done = [r[3] for r in rows if not r[1] and r[3]]
    steady = [d for d in done if t0 + 3e6 <= d <= t0 + a.secs * 1e6]
    setup = [(r[3] - r[2]) / 1000 for r in rows if not r[1] and r[2] and r[3]]
    dur = [(r[5] - r[4]) / 1e6 for r in rows if r[4] and r[5]]
    causes = {}
    for r in rows:
        causes[r[6]] = causes.get(r[6], 0) + 1
    ok = sum(1 for r in rows if not r[1])
    summary = p.stdout[p.stdout.find('== switchy run summary'):]
    bottleneck = [line.strip() for line in summary.splitlines() if 'BOTTLENECK' in line]
    for suffix in ('', '-wal', '-shm', '.json'):
        with contextlib.suppress(FileNotFoundError):
            os.remove(db + suffix)
    return dict(
        client='switchy-controller run --esl',
        rate=round(len(steady) / (a.secs - 3), 1) if a.secs > 4 else None,
        answered=ok, failed=len(rows) - ok, cdrs=len(rows),
        left_over=channels_left(),
        setup_ms=lat_summary(setup), setup_clock="the agent's clock (bgapi written -> BACKGROUND_JOB)",
        call_duration_s=dict(p50=pct(dur, .5), p99=pct(dur, .99), max=pct(dur, 1.0)),
        fs_cpu_s=round(c1 - c0, 2),
        fs_cpu_ms_per_call=round(1000 * (c1 - c0) / ok, 3) if ok else None,
        fs_esl_threads=len(esl_n), fs_esl_thread_cpu_s=[round(x, 2) for x in esl_n], fs_esl_ms_per_call=round(1000 * esl_s / ok, 3) if ok else None,
        wall_s=round(wall, 1), hangup_causes=causes, bottleneck=bottleneck,
        client_cpu_pct=round(100 * client_cpu_s / wall, 1),
        originator=dict((k, m['originator'][k]) for k in ('offered', 'answered', 'failed', 'average_cps')))


def invocation(switchy_first):
    pid = fs_pid()
    prev = api('fsctl sps', 'fsctl max_sessions')
    results = {}
    try:
        order = ('switchy', 'baseline') if switchy_first else ('baseline', 'switchy')
        for which in order:
            if a.only and a.only != which:
                continue
            if a.restart_fs:
                pid = restart_fs()
            settle()
            api('fsctl sps 10000', 'fsctl max_sessions 10000')
            results[which] = (run_baseline if which == 'baseline' else run_switchy)(pid)
            print(json.dumps(results[which]), file=sys.stderr)
    finally:
        import re
        sps = re.search(r'(\d+)', prev[0])
        mx = re.search(r'(\d+)', prev[1])
        if sps and mx and not a.restart_fs:
            api('fsctl sps ' + sps.group(1), 'fsctl max_sessions ' + mx.group(1))
    out = dict(rate_req=a.rate, secs=a.secs, hold=a.hold, at=time.strftime('%Y-%m-%d %H:%M:%S'),
               order=list(results), **results)
    b, s = results.get('baseline'), results.get('switchy')
    print('\n== FreeSWITCH bench: %g calls/s requested for %g s, calls held %g s ==' % (a.rate, a.secs, a.hold))
    fmt = '  %-32s %12s %12s'
    print(fmt % ('', 'baseline', 'switchy'))

    def g(r, *k):
        v = r
        for x in k:
            v = None if v is None else v.get(x)
        return '-' if v is None else v
    for label, key in [('calls/s achieved (steady)', ('rate',)), ('answered', ('answered',)),
                       ('failed', ('failed',)), ('channels left over', ('left_over',)),
                       ('setup p50 ms', ('setup_ms', 'p50')), ('setup p95 ms', ('setup_ms', 'p95')),
                       ('setup p99 ms', ('setup_ms', 'p99')), ('setup max ms', ('setup_ms', 'max')),
                       ('call duration p99 s', ('call_duration_s', 'p99')),
                       ('FreeSWITCH CPU-s', ('fs_cpu_s',)),
                       ('FreeSWITCH CPU ms per call', ('fs_cpu_ms_per_call',)),
                       ('  of which ESL threads', ('fs_esl_ms_per_call',)),
                       ('  (ESL connection threads)', ('fs_esl_threads',)),
                       ('client CPU % of a core', ('client_cpu_pct',))]:
        print(fmt % (label, g(b, *key), g(s, *key)))
    if b and s and b.get('rate') and s.get('rate'):
        out['rate_ratio'] = round(s['rate'] / b['rate'], 4)
        print('  switchy / baseline rate:         %.4f' % out['rate_ratio'])
    if b and s and b.get('fs_cpu_ms_per_call') and s.get('fs_cpu_ms_per_call'):
        out['fs_cpu_per_call_ratio'] = round(s['fs_cpu_ms_per_call'] / b['fs_cpu_ms_per_call'], 4)
        print('  switchy / baseline FS CPU per call: %.4f' % out['fs_cpu_per_call_ratio'])
    if b and s and b.get('fs_esl_ms_per_call') and s.get('fs_esl_ms_per_call'):
        out['fs_esl_per_call_ratio'] = round(s['fs_esl_ms_per_call'] / b['fs_esl_ms_per_call'], 4)
        print('  switchy / baseline FS ESL-thread CPU per call: %.4f' % out['fs_esl_per_call_ratio'])
    if s:
        for line in s['bottleneck']:
            print('  switchy ' + line)
    if a.out:
        with open(a.out, 'a') as f:
            f.write(json.dumps(out) + '\n')
    return out


def interval(ratios):
    """Geometric mean of ratios and its 95 % interval (Student's t on the
    logs); None for the interval with fewer than two."""
    import math
    logs = [math.log(r) for r in ratios]
    n = len(logs)
    m = sum(logs) / n
    if n < 2:
        return math.exp(m), None
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / (n - 1))
    # two-sided 95 % t quantiles for 1..30 degrees of freedom, then the normal one
    t = [12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13,
         2.12, 2.11, 2.10, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05, 2.04]
    q = t[n - 2] if n - 1 <= len(t) else 1.96
    h = q * sd / math.sqrt(n)
    return math.exp(m), (math.exp(m - h), math.exp(m + h))


def main():
    outs = [invocation(a.switchy_first ^ (i % 2 == 1)) for i in range(a.pairs)]
    if a.pairs < 2:
        return
    print('\n== %d invocations at %g calls/s, alternating the first client ==' % (len(outs), a.rate))
    for key, label in (('fs_cpu_per_call_ratio', 'FS CPU per call, switchy / baseline'),
                       ('fs_esl_per_call_ratio', 'FS ESL-thread CPU per call, sw / base'),
                       ('rate_ratio', 'calls/s achieved, switchy / baseline')):
        rs = [o[key] for o in outs if o.get(key)]
        if not rs:
            continue
        gm, ci = interval(rs)
        print('  %-38s each: %s' % (label, ' '.join('%.3f' % r for r in rs)))
        print('  %-38s geometric mean %.3f, 95%% interval %s' %
              ('', gm, '%.3f-%.3f' % ci if ci else '-'))
    for which in ('baseline', 'switchy'):
        kept = sum(1 for o in outs if o.get(which) and o[which]['rate'] and o[which]['rate'] >= 0.99 * a.rate)
        bad = sum(1 for o in outs if o.get(which) and (o[which]['failed'] or o[which]['left_over']))
        print('  %-9s kept >= 99 %% of the rate in %d of %d; runs with failures or leftovers: %d' %
              (which, kept, len(outs), bad))


main()
