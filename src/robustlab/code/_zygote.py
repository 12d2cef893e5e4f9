"""The sandbox's pre-forked worker ("zygote"), run as ``python -I -S _zygote.py`` (stdlib only).

Started by :mod:`robustlab.code.sandbox` inside new network and PID namespaces. At start (as root of
its namespaces, before any job) it imports a fixed list of standard-library modules, then builds a
minimal read-only root in a private mount namespace (a tmpfs skeleton with read-only binds of /usr
and the Python install, a fake /etc, a few /dev nodes) and pivots into it; it prints one JSON
"hello" line saying which layers are in force. Then, per job (one JSON line on stdin), it forks two
processes that never share memory, file descriptors or a PID namespace:

* the **candidate** (untrusted): pid 1 of a new PID namespace with its own mount namespace, a fresh
  /proc of that namespace and a fresh tmpfs /tmp; rlimits; drops to the job's uid (root) or all
  capabilities (user namespace) *before* it compiles anything of the job; runs ``program`` and then
  answers calls of ``entry_point`` over a socket -- arguments and results are plain data in a
  tagged binary format (no pickle, no marshal), so nothing it returns can run code or override
  ``==`` in the checker;
* the **checker** (trusted): another uid (root) and non-dumpable (no ptrace, no /proc/<pid>/mem);
  runs ``context`` (the prompt's helpers) and ``tests`` with ``entry_point`` bound to a proxy that
  calls the candidate, then ``call``. Only the checker holds the verdict pipe; it writes "passed"
  only if the checks returned normally, the channel never broke and every reply was well-formed.

The zygote enforces the wall-clock timeout and kills the candidate's PID namespace (all processes
the program left), and answers one JSON line on stdout.
"""

import builtins
import contextlib
import ctypes
import json
import os
import platform
import resource
import select
import signal
import socket
import struct
import sys
import tempfile
import traceback

PRELOAD = (
    "typing",
    "math",
    "re",
    "collections",
    "itertools",
    "functools",
    "heapq",
    "hashlib",
    "string",
    "random",
    "bisect",
    "fractions",
    "decimal",
    "statistics",
    "operator",
    "copy",
    "json",
    "datetime",
    "array",
    "dataclasses",
    "enum",
    "cmath",
    "numbers",
    "textwrap",
    "unicodedata",
    "time",
    "shutil",
    "subprocess",
    "threading",
)
for _name in PRELOAD:
    with contextlib.suppress(ImportError):
        __import__(_name)

LIBC = ctypes.CDLL(None, use_errno=True)
NEWNS, NEWPID = 0x00020000, 0x20000000
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine(), -1)
MAX_FRAME = 64 << 20
ENDED = "program ended before the tests finished"
DEV = ("null", "zero", "full", "random", "urandom")


def _c(ret):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def mount(src, dst, fstype, flags, data=None):
    enc = [None if v is None else v.encode() for v in (src, dst, fstype, data)]
    _c(LIBC.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]))


def ro_bind(src, dst):
    """Bind ``src`` at ``dst`` read-only, keeping the flags a user namespace may not clear."""
    mount(src, dst, None, BIND | REC)
    kept = os.statvfs(src).f_flag & (NOSUID | NODEV | NOEXEC)
    mount(None, dst, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV | kept)


def skeleton():
    """Pivot into a tmpfs root with read-only binds of what the interpreter needs."""
    prefix = os.path.realpath(sys.base_prefix)
    exe = os.path.realpath(sys.executable)
    sources = ["/usr", prefix, os.path.dirname(exe)]
    with open("/proc/self/mountinfo") as f:  # a mount point with nothing mounted below it
        below = [ln.split()[4] for ln in f]
    mp = next(
        d
        for d in ("/mnt", "/media", "/srv", "/opt", "/tmp", "/var", "/home", "/boot")
        if os.path.isdir(d)
        and not any((s + "/").startswith(d + "/") for s in sources)
        and not any(m.startswith(d + "/") for m in below)
    )
    mount(None, "/", None, REC | PRIVATE)
    mount("tmpfs", mp, "tmpfs", NOSUID | NODEV, "size=4m,mode=755")

    def mk(path, mode=0o755):
        os.makedirs(mp + path, mode=mode, exist_ok=True)
        os.chmod(mp + path, mode)
        return mp + path

    binds = [("/usr", "/usr")] + ([] if (prefix + "/").startswith("/usr/") else [(prefix, prefix)])
    for src, dst in binds:
        ro_bind(src, mk(dst))
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), mp + host)
        elif os.path.isdir(host):
            ro_bind(host, mk(host))
    if not os.path.exists(mp + sys.executable) and os.path.isabs(sys.executable):
        mk(os.path.dirname(sys.executable))
        os.symlink(exe, mp + sys.executable)
    for d, mode in (("/proc", 0o555), ("/tmp", 0o1777), ("/dev", 0o755), ("/etc", 0o755)):
        mk(d, mode)
    if os.getpid() == 1:  # our own PID namespace's /proc: lets a user namespace mount the jobs'
        mount("proc", mp + "/proc", "proc", NOSUID | NODEV | NOEXEC)
    for name in DEV:
        open(mp + "/dev/" + name, "w").close()
        mount("/dev/" + name, mp + "/dev/" + name, None, BIND)
    os.symlink("/proc/self/fd", mp + "/dev/fd")
    files = {
        "passwd": "root:x:0:0::/:/bin/sh\nsandbox:x:65534:65534::/tmp:/bin/sh\n",
        "group": "root:x:0:\nsandbox:x:65534:\n",
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
    }
    for name, text in files.items():
        with open(mp + "/etc/" + name, "w") as f:
            f.write(text)
    if os.path.isfile("/etc/ld.so.cache"):
        open(mp + "/etc/ld.so.cache", "w").close()
        ro_bind("/etc/ld.so.cache", mp + "/etc/ld.so.cache")
    os.chdir(mp)
    _c(LIBC.syscall(PIVOT_ROOT, b".", b"."))  # pivot_root(".", "."): the old root stacks on top
    _c(LIBC.umount2(b".", 2))  # MNT_DETACH: the host's tree is gone from this namespace
    os.chdir("/")
    mount(None, "/", None, REMOUNT | BIND | RDONLY | NOSUID | NODEV)


# --- plain-data frames: both sides encode, only the checker's decoder is trusted -------------


def enc(v, out, depth=0):
    if depth > 100:
        raise ValueError("value nested too deeply")
    t = type(v)
    if v is None or t is bool:
        out.append({None: b"N", True: b"T", False: b"F"}[v])
    elif isinstance(v, int):
        v = int.__index__(v)
        raw = v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True)
        out.append(b"i" + struct.pack(">I", len(raw)) + raw)
    elif isinstance(v, float):
        out.append(b"f" + struct.pack(">d", float(v)))
    elif isinstance(v, complex):
        out.append(b"c" + struct.pack(">dd", v.real, v.imag))
    elif isinstance(v, (str, bytes, bytearray)):
        raw = str.encode(str(v), "utf-8", "surrogatepass") if isinstance(v, str) else bytes(v)
        out.append((b"s" if isinstance(v, str) else b"b") + struct.pack(">I", len(raw)) + raw)
    elif isinstance(v, (list, tuple, set, frozenset, dict)):
        items = list(v.items()) if isinstance(v, dict) else list(v)
        tag = (
            b"d"
            if isinstance(v, dict)
            else {list: b"l", tuple: b"t", set: b"S"}.get(
                next(k for k in (list, tuple, set, frozenset) if isinstance(v, k)), b"z"
            )
        )
        out.append(tag + struct.pack(">I", len(items)))
        for it in items:
            if isinstance(v, dict):
                enc(it[0], out, depth + 1)
                enc(it[1], out, depth + 1)
            else:
                enc(it, out, depth + 1)
    else:
        raise TypeError(f"a value of type {t.__name__} cannot cross the sandbox boundary")


def dec(buf, pos=0, depth=0):
    """Decode one value; only builtin types come out. Malformed input raises ValueError."""
    if depth > 100:
        raise ValueError("value nested too deeply")
    tag = buf[pos : pos + 1]
    pos += 1
    if tag in (b"N", b"T", b"F"):
        return {b"N": None, b"T": True, b"F": False}[tag], pos
    if tag == b"f":
        return struct.unpack_from(">d", buf, pos)[0], pos + 8
    if tag == b"c":
        re_, im = struct.unpack_from(">dd", buf, pos)
        return complex(re_, im), pos + 16
    (n,) = struct.unpack_from(">I", buf, pos)
    pos += 4
    if tag in (b"i", b"s", b"b"):
        raw = bytes(buf[pos : pos + n])
        if len(raw) != n:
            raise ValueError("truncated frame")
        v = {
            b"i": lambda r: int.from_bytes(r, "big", signed=True),
            b"s": lambda r: r.decode("utf-8", "surrogatepass"),
            b"b": bytes,
        }[tag](raw)
        return v, pos + n
    if tag not in (b"l", b"t", b"S", b"z", b"d") or n > len(buf):
        raise ValueError("malformed frame")
    items = []
    for _ in range(n * 2 if tag == b"d" else n):
        v, pos = dec(buf, pos, depth + 1)
        items.append(v)
    if tag == b"d":
        return dict(zip(items[::2], items[1::2], strict=True)), pos
    return {b"l": list, b"t": tuple, b"S": set, b"z": frozenset}[tag](items), pos


def _frame(value):
    out = []
    enc(value, out)
    data = b"".join(out)
    return struct.pack(">I", len(data)) + data


def send(sock, value):
    sock.sendall(_frame(value))


def recv(sock):
    """One decoded frame, or None when the other side is gone."""
    head = _exact(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n > MAX_FRAME:
        raise ValueError("frame too large")
    data = _exact(sock, n)
    if data is None:
        return None
    v, end = dec(memoryview(data))
    if end != n:
        raise ValueError("trailing bytes in frame")
    return v


def _exact(sock, n):
    chunks, got = [], 0
    while got < n:
        b = sock.recv(min(n - got, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


# --- the two processes -------------------------------------------------------------------------


def _last_line(exc):
    lines = traceback.format_exception_only(type(exc), exc)
    return (lines[-1].strip() if lines else type(exc).__name__)[:300]


def _fds(keep):
    """stdin/out/err to /dev/null, ``keep`` to 3, 4, ...; every other descriptor closed."""
    null = os.open(os.devnull, os.O_RDWR)
    for i, fd in enumerate(keep):
        os.dup2(fd, 200 + i)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for i in range(len(keep)):
        os.dup2(200 + i, 3 + i)
    os.closerange(3 + len(keep), 1 << 16)


def _limits(job):
    for lim, v in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_AS, job["mem"]),
        (resource.RLIMIT_CPU, job["cpu"]),
        (resource.RLIMIT_FSIZE, job["fsize"]),
    ):
        resource.setrlimit(lim, (v, v))


def _drop(uid, nproc):
    """As root: the job's uid; in a user namespace: no capabilities. Then no way back."""
    for cap in range(64):  # empty the bounding set while we may (CAP_SETPCAP)
        if LIBC.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, until EINVAL
            break
    if uid >= 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    _c(LIBC.capset(struct.pack("Ii", 0x20080522, 0), bytes(24)))  # version 3, this thread
    _c(LIBC.prctl(38, 1, 0, 0, 0))  # PR_SET_NO_NEW_PRIVS


def candidate(job, sock_fd, ns):
    """Untrusted side: set up the jail as root, drop, then run the program and serve calls."""
    LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    os.setsid()
    uid = job["uid"]
    if ns["mount_namespace"]:
        _c(LIBC.unshare(NEWNS))
        if ns["pid_namespace"]:
            mount("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC)
        owner = max(uid, 0)
        opts = f"size={job['fsize'] * 2},nr_inodes=4096,mode=700,uid={owner},gid={owner}"
        mount("tmpfs", "/tmp", "tmpfs", NOSUID | NODEV, opts)
        work = "/tmp"
    else:
        work = job["workdir"]
    os.chdir(work)
    _fds([sock_fd])
    os.environ.clear()
    os.environ.update(PATH="/usr/bin:/bin", HOME=work, TMPDIR=work, LANG="C.UTF-8")
    _limits(job)
    _drop(uid, job["nproc"])
    # from here on, everything is the program's to subvert; the checker trusts none of it
    sock = socket.socket(fileno=3)
    src = job["program"]
    g = {"__name__": "__main__"}
    try:
        with open("program.py", "w", encoding="utf-8") as f:  # for tracebacks' source lines
            f.write(src)
        exec(compile(src, "program.py", "exec"), g)
    except BaseException as e:  # noqa: BLE001 -- SystemExit too: leaving early is a failure
        send(sock, ("error", _last_line(e)))
        return
    send(sock, ("ready",))
    while (req := recv(sock)) is not None:
        try:
            reply = ("ok", g[req[1]](*req[2], **req[3]))
            send(sock, reply)
        except BaseException as e:  # noqa: BLE001
            msg = str(e)[:300] if not isinstance(e, KeyError) else f"name {req[1]!r} is not defined"
            name = type(e).__name__ if not isinstance(e, KeyError) else "NameError"
            send(sock, ("raise", name, msg))


def _statements(src):
    """The top-level statements of ``src`` that compile (all of it when it parses as a whole).

    A transformed prompt may not parse as a whole (e.g. a docstring turned into comments leaves
    the entry point without a body), but the helpers the tests need still do.
    """
    try:
        return [compile(src, "prompt.py", "exec")]
    except SyntaxError:
        pass
    chunks, lines = [], src.splitlines(keepends=True)
    for i, ln in enumerate(lines):
        prev = next((p for p in reversed(lines[:i]) if p.strip()), "")
        top = ln[:1].strip() and ln[:1] not in "#)]}" and not prev.startswith("@")
        if top or not chunks:
            chunks.append((i, []))
        chunks[-1][1].append(ln)
    out = []
    for i, body in chunks:
        with contextlib.suppress(SyntaxError, ValueError):
            out.append(compile("\n" * i + "".join(body), "prompt.py", "exec"))
    return out


class Broken(BaseException):
    """The candidate broke the protocol or ended: test code cannot catch it with ``except Exception``."""


def _exception(name, msg):
    cls = getattr(builtins, name, None) if isinstance(name, str) else None
    # never StopIteration: inside map(), next() etc. it would end the checks' loops early
    iteration = (StopIteration, StopAsyncIteration)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, iteration):
        with contextlib.suppress(Exception):
            return cls(msg)
    return RuntimeError(f"{name}: {msg}")


def checker(job, sock_fd, verdict_fd):
    """Trusted side: runs the tests against a proxy; the only writer of the verdict."""
    LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)
    os.setsid()
    os.chdir("/")
    _fds([sock_fd, verdict_fd])
    _limits(job)
    _drop(job["checker_uid"], job["nproc"])
    LIBC.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no ptrace, no /proc/<pid>/mem, even same uid
    sock = socket.socket(fileno=3)
    broken = []

    def reply(request=None):
        """Send ``request`` (if any), read one reply; any failure of the channel is final."""
        if broken:
            raise Broken
        frame = _frame(request) if request is not None else b""  # non-data args: the tests' error
        try:
            if frame:
                sock.sendall(frame)
            r = recv(sock)
        except BaseException as e:  # noqa: BLE001 -- MemoryError, RecursionError, OSError ...
            broken.append(f"malformed reply from the program ({type(e).__name__}: {e})"[:300])
            raise Broken from None
        if r is None:
            broken.append(ENDED)
            raise Broken
        return r

    def proxy(*args, **kwargs):
        r = reply(("call", job["entry_point"], args, kwargs))
        if type(r) is tuple and len(r) == 2 and r[0] == "ok":
            return r[1]
        if type(r) is tuple and len(r) == 3 and r[0] == "raise":
            raise _exception(r[1], r[2])
        broken.append("malformed reply from the program")
        raise Broken

    passed, message = False, ""
    try:
        first = reply()
        if first == ("ready",):
            g = {"__name__": "__main__"}
            for code in _statements(job["context"]):
                exec(code, g)
            if job["entry_point"]:
                g[job["entry_point"]] = proxy
            exec(compile(job["tests"] + "\n" + job["call"], "test.py", "exec"), g)
            passed = not broken
        elif type(first) is tuple and len(first) == 2 and first[0] == "error":
            message = str(first[1])[:300]
        else:
            broken.append("malformed first message from the program")
    except BaseException as e:  # noqa: BLE001
        message = _last_line(e)
    if broken:
        passed, message = False, broken[0]
    os.write(4, json.dumps({"passed": passed, "message": message}).encode())


def _fork(fn, *args):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)
    return pid


def kill_uid(uid):
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def run(job, ns, own_pidns):
    a, b = socket.socketpair()
    workdir = None
    if not ns["mount_namespace"]:
        workdir = job["workdir"] = tempfile.mkdtemp(prefix="robustlab-sbx-")
        if job["uid"] >= 0:
            os.chown(workdir, job["uid"], job["uid"])
    sys.stdout.flush()
    if ns["pid_namespace"]:
        _c(LIBC.unshare(NEWPID))  # the next child is pid 1 of a new PID namespace
    try:
        cpid = _fork(candidate, job, a.fileno(), ns)
    finally:
        if ns["pid_namespace"]:
            _c(LIBC.setns(own_pidns, NEWPID))
    r, w = os.pipe()
    kpid = _fork(checker, job, b.fileno(), w)
    a.close()
    b.close()
    os.close(w)
    pidfd = os.pidfd_open(kpid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    done = bool(poller.poll(job["timeout"] * 1000))
    os.close(pidfd)
    for pid in (cpid, kpid):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    cstatus = os.waitpid(cpid, 0)[1]
    os.waitpid(kpid, 0)
    if job["uid"] >= 0 and not ns["pid_namespace"]:
        kill_uid(job["uid"])
    os.set_blocking(r, False)
    try:
        verdict = json.loads(os.read(r, 1 << 16) or b"{}")
    except (BlockingIOError, ValueError):
        verdict = {}
    os.close(r)
    if workdir:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    while True:  # reap orphans re-parented to us (we are pid 1 of our namespace)
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    passed = bool(verdict.get("passed")) and done
    message = str(verdict.get("message", "")) if verdict else "the tests ended without a verdict"
    code = os.waitstatus_to_exitcode(cstatus)
    if message == ENDED and (code < 0 or code > 128):
        sig = -code if code < 0 else code - 128
        message = "killed by " + (
            signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        )
    elif message == ENDED:
        message = f"exited with status {code} before finishing"
    return {"done": done, "passed": passed, "message": message}


def probe():
    """Which layers work here: a mount namespace with the skeleton, a PID namespace per job."""
    ns = {"mount_namespace": False, "pid_namespace": False}
    own = -1
    with contextlib.suppress(OSError):  # opened before the pivot hides the host's /proc
        own = os.open("/proc/self/ns/pid", os.O_RDONLY)
    with contextlib.suppress(OSError):
        _c(LIBC.unshare(NEWPID))
        pid = os.fork()
        if pid == 0:
            os._exit(0 if os.getpid() == 1 else 1)
        _c(LIBC.setns(own, NEWPID))
        ns["pid_namespace"] = os.waitpid(pid, 0)[1] == 0
    try:
        _c(LIBC.unshare(NEWNS))
        skeleton()
        ns["mount_namespace"] = True
    except (OSError, StopIteration):
        pass
    return ns, own


def main():
    ns, own = probe()
    print(json.dumps({"hello": ns}), flush=True)
    for line in sys.stdin:
        res = run(json.loads(line), ns, own)
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
