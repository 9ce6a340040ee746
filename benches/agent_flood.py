"""The agent's memory under a flood of 1 MB events while the controller is
unreachable (real processes): its RSS must stay within the configured
byte bound + 50 MB.

    python3 benches/agent_flood.py [EVENTS] [MIB]    (after cargo build --release)
"""
import json, os, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, 'target', 'release')
EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
MIB = int(sys.argv[2]) if len(sys.argv) > 2 else 64
ESL, HTTP = 18321, 19321


def rss_mib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return 0.0


def post(path, body):
    req = urllib.request.Request('http://127.0.0.1:%d%s' % (HTTP, path), data=json.dumps(body).encode(),
                                 headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def main():
    d = tempfile.mkdtemp(prefix='switchy-agent-flood-')
    ctl = os.path.join(BIN, 'switchy-controller')
    subprocess.run([ctl, 'ca', 'init', '--dir', d], check=True, capture_output=True)
    subprocess.run([ctl, 'ca', 'issue', '--name', 'fs1', '--dir', d], check=True, capture_output=True)
    procs = []
    try:
        procs.append(subprocess.Popen([os.path.join(BIN, 'mock-relay'), '--nodes', '1', '--esl-port', str(ESL),
                                       '--http-port', str(HTTP)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        # No controller listens on 127.0.0.1:14999: everything stays buffered.
        agent = subprocess.Popen([os.path.join(BIN, 'switchy-agent'), '--node-id', 'fs1',
                                  '--controller', '127.0.0.1:14999', '--tls-ca', d + '/ca.pem',
                                  '--tls-cert', d + '/fs1.pem', '--tls-key', d + '/fs1.key',
                                  '--esl-port', str(ESL), '--max-buffer-mib', str(MIB)],
                                 env=dict(os.environ, RUST_LOG='warn'),
                                 stdout=open(d + '/agent.out', 'w'), stderr=open(d + '/agent.err', 'w'))
        procs.append(agent)
        time.sleep(1.5)
        idle = rss_mib(agent.pid)
        body = 'x' * (1 << 20)
        peak = idle
        t0 = time.monotonic()
        for i in range(EVENTS):
            post('/__mock__/push', {'node': 0, 'event': {'Event-Name': 'CHANNEL_HANGUP_COMPLETE',
                                                         'Unique-ID': 'flood-%d' % i}, 'body': body})
            if i % 50 == 0:
                peak = max(peak, rss_mib(agent.pid))
        time.sleep(2)
        peak = max(peak, rss_mib(agent.pid))
        agent.kill()
        agent.wait()
        err = open(d + '/agent.out').read() + open(d + '/agent.err').read()
        drops = sum(1 for l in err.splitlines() if 'event buffer full' in l)
        print('%d events of 1 MB in %.1f s, controller unreachable, buffer bound %d MiB: agent RSS idle %.1f MiB, '
              'peak %.1f MiB (bound + 50 = %d MiB): %s; drop log lines: %d'
              % (EVENTS, time.monotonic() - t0, MIB, idle, peak, MIB + 50,
                 'within' if peak <= MIB + 50 else 'OVER', drops))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


main()
