"""Helpers the FreeSWITCH bench scripts share: api commands on a fresh ESL
connection, FreeSWITCH's pid, a restart as the build script starts it, and
waiting for a quiet FreeSWITCH. FS_ESL (127.0.0.1:8021), FS_PREFIX
(/opt/freeswitch) and FS_FLAGS (-nc -nonat) as in benches/freeswitch.py."""
import os, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(HERE, '..', '..', 'shared', 'tools', 'freeswitch')
sys.path.insert(0, TOOLS)
import cpumon  # noqa: E402  (the shared /proc sampler)

esl = os.environ.get('FS_ESL', '127.0.0.1:8021')
host, port = esl.rsplit(':', 1)
port = int(port)


class Conn:
    """A plain, authenticated ESL connection."""

    def __init__(self, password='ClueCon'):
        self.s = socket.create_connection((host, port), timeout=30)
        self.f = self.s.makefile('rb')
        self.frame()  # auth/request
        h, _, _ = self.send('auth ' + password)
        if not h.get('Reply-Text', '').startswith('+OK'):
            raise OSError('ESL auth refused: %r' % h)

    def frame(self):
        """The next frame: (headers, body, bytes on the wire)."""
        h = {}
        n = 0
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError('FreeSWITCH closed the connection')
            n += len(line)
            line = line.decode().rstrip('\n')
            if not line:
                break
            k, _, v = line.partition(': ')
            h[k] = v
        body = self.f.read(int(h.get('Content-Length', 0)))
        return h, body, n + len(body)

    def send(self, cmd):
        """Sends a command; its reply frame."""
        self.s.sendall(cmd.encode() + b'\n\n')
        return self.frame()

    def cmd(self, cmd):
        """Sends a command; its reply's body, else its Reply-Text."""
        h, body, _ = self.send(cmd)
        return body.decode() if body else h.get('Reply-Text', '')

    def close(self):
        try:
            self.s.sendall(b'exit\n\n')
        except OSError:
            pass
        self.s.close()


def api(*cmds):
    """api commands on a fresh ESL connection; their replies."""
    c = Conn()
    out = [c.cmd('api ' + x) for x in cmds]
    c.close()
    return out


def fs_pid():
    p = subprocess.run(['pgrep', '-x', 'freeswitch'], capture_output=True, text=True).stdout.split()
    if not p:
        sys.exit('no freeswitch process on this host: build and start it with '
                 '../shared/tools/freeswitch/build.sh (see its README)')
    return int(p[0])


def restart_fs():
    """Stop FreeSWITCH, start it again as the build script does, and wait
    until its external profile runs; the new pid."""
    prefix = os.environ.get('FS_PREFIX', '/opt/freeswitch')
    fs = os.path.join(prefix, 'bin', 'freeswitch')
    old = fs_pid()
    subprocess.run([fs, '-stop'], capture_output=True)
    for _ in range(300):
        if not os.path.exists('/proc/%d' % old):
            break
        time.sleep(0.1)
    else:
        sys.exit('FreeSWITCH %d did not stop within 30 s' % old)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    subprocess.run([fs] + os.environ.get('FS_FLAGS', '-nc -nonat').split(), capture_output=True, check=True)
    for _ in range(600):
        try:
            if any('external' in l and 'RUNNING' in l for l in api('sofia status')[0].splitlines()):
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        sys.exit('FreeSWITCH did not come back with its external profile within 60 s')
    time.sleep(2)
    return fs_pid()


def settle():
    """No ESL client for 3 s, then no channel left (up to 60 s)."""
    cpumon.wait_quiet(port, 120)
    for _ in range(600):
        n = api('show channels count')[0]
        if n.strip().startswith('0 total'):
            return
        time.sleep(0.1)
    print('WARNING: channels still up before the run:', n.strip())


def channels_left():
    """Channels still up 5 s after the client finished (its last hangups
    need a moment to complete)."""
    n = -1
    for _ in range(50):
        txt = api('show channels count')[0].strip()
        try:
            n = int(txt.split()[0])
        except (ValueError, IndexError):
            n = -1
        if n == 0:
            return 0
        time.sleep(0.1)
    return n


class ThreadCpu:
    """Samples, twice a second while a client runs, the CPU of FreeSWITCH's
    ESL connection threads, to tell apart what the client's way of talking
    to FreeSWITCH costs it from what its calls cost.

    mod_event_socket runs each ESL connection in its own thread: that thread
    serializes every event the connection subscribed to and runs its `api`
    commands, and between them waits in poll(2) on the connection's socket
    alone, with a 20 ms timeout. A thread seen in such a poll whose file
    descriptor is a TCP socket on the ESL port is one of them (read from
    /proc/PID/task/TID/syscall and the pollfd in /proc/PID/mem: needs root,
    as FreeSWITCH runs here). Threads that were there before start() are
    left out."""

    def __init__(self, pid):
        import threading
        self.pid = pid
        self.before = set(self._tids())
        self.esl = {}  # tid -> cpu s
        self.other = set()
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _tids(self):
        try:
            return os.listdir('/proc/%d/task' % self.pid)
        except OSError:
            return []

    def _esl_inodes(self):
        out = set()
        for path in ('/proc/net/tcp', '/proc/net/tcp6'):
            try:
                with open(path) as f:
                    next(f)
                    for line in f:
                        x = line.split()
                        if int(x[1].rsplit(':', 1)[1], 16) == port:
                            out.add(x[9])
            except (OSError, StopIteration, IndexError, ValueError):
                pass
        return out

    def _is_esl(self, tid, inodes, mem):
        try:
            with open('/proc/%d/task/%s/syscall' % (self.pid, tid)) as f:
                sc = f.read().split()
            if len(sc) < 4 or sc[0] != '7' or int(sc[2], 16) != 1:
                return False
            mem.seek(int(sc[1], 16))
            fd = int.from_bytes(mem.read(4), 'little', signed=True)
            link = os.readlink('/proc/%d/fd/%d' % (self.pid, fd))
        except (OSError, ValueError, OverflowError):
            return False
        return link.startswith('socket:[') and link[8:-1] in inodes

    def _sample(self):
        inodes = self._esl_inodes()
        try:
            mem = open('/proc/%d/mem' % self.pid, 'rb')
        except OSError:
            mem = None
        for tid in self._tids():
            if tid in self.before:
                continue
            if tid not in self.esl:
                if mem is None or not self._is_esl(tid, inodes, mem):
                    continue
            try:
                with open('/proc/%d/task/%s/stat' % (self.pid, tid)) as f:
                    parts = f.read().rsplit(')', 1)[1].split()
                self.esl[tid] = (int(parts[11]) + int(parts[12])) / cpumon.TCK
            except (OSError, IndexError, ValueError):
                pass
        if mem:
            mem.close()

    def _run(self):
        while not self.stop.is_set():
            self._sample()
            self.stop.wait(0.5)

    def start(self):
        self.t.start()
        return self

    def finish(self):
        """(CPU-s of the ESL connection threads, each one's CPU-s); their
        last half second before each closed is not seen."""
        self.stop.set()
        self.t.join()
        return sum(self.esl.values()), sorted(self.esl.values(), reverse=True)
