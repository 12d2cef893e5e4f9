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
import json
import os
import select
import signal
import socket
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # our two helpers, then no more
from _sandbox_jail import (  # noqa: E402
    LIBC,
    NEWNS,
    NEWPID,
    NODEV,
    NOEXEC,
    NOSUID,
    _c,
    _drop,
    _fds,
    _limits,
    mount,
    skeleton,
)
from _sandbox_wire import _frame, recv, send  # noqa: E402

del sys.path[0]
for _name in PRELOAD:
    with contextlib.suppress(ImportError):
        __import__(_name)

ENDED = "program ended before the tests finished"
DEV = ("null", "zero", "full", "random", "urandom")


# --- the two processes -------------------------------------------------------------------------


def _last_line(exc):
    lines = traceback.format_exception_only(type(exc), exc)
    return (lines[-1].strip() if lines else type(exc).__name__)[:300]


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
        cont = ln.startswith(("else", "elif", "except", "finally", "#", ")", "]", "}"))
        top = ln[:1].strip() and not cont and not prev.startswith("@")
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
