"""The sandbox's pre-forked worker ("zygote"), run as ``python -I -S _zygote.py`` (stdlib only).

It imports common standard-library modules once, then for each job (one JSON line on stdin) forks a
fresh child that enters a new session, sets rlimits, moves into the job's private directory,
drops to the job's uid (when started as root), runs ``program.py`` and reports success through a
private pipe. The zygote enforces the wall-clock timeout, kills the child's process group and --
as the job's uid, with ``kill(-1)`` -- every process that uid still has (daemonized or setsid'd
fork-bomb children included), reaps orphans, and answers one JSON line on stdout.
"""

import contextlib
import json
import os
import re
import resource
import select
import signal
import sys
import traceback

PRELOAD = [
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
    "ctypes",
    "socket",
    "array",
    "dataclasses",
    "enum",
    "cmath",
    "numbers",
    "textwrap",
    "unicodedata",
    "struct",
    "time",
    "shutil",
    "subprocess",
    "threading",
]
for _name in PRELOAD:
    with contextlib.suppress(ImportError):
        __import__(_name)
TOKEN = b"robustlab-sandbox-ok"
IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import|import[ \t]+([\w., \t]+))", re.M)


def preimport(src):
    for m in IMPORT.finditer(src):
        for name in (m.group(1) or m.group(2)).split(","):
            name = name.split()[0] if name.split() else ""
            if name and name not in ("antigravity", "this"):
                with contextlib.suppress(BaseException):
                    __import__(name)


def child(job, w):
    os.setsid()
    os.chdir(job["dir"])
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    err = os.open(".stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(err, 2)
    os.environ.clear()
    os.environ.update(PATH="/usr/bin:/bin", HOME=job["dir"], TMPDIR=job["dir"], LANG="C.UTF-8")
    for lim, v in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_AS, job["mem"]),
        (resource.RLIMIT_CPU, job["cpu"]),
        (resource.RLIMIT_FSIZE, job["fsize"]),
    ):
        resource.setrlimit(lim, (v, v))
    with open("program.py", encoding="utf-8") as f:
        src = f.read()
    uid = job["uid"]
    if uid >= 0:
        preimport(src)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        resource.setrlimit(resource.RLIMIT_NPROC, (job["nproc"], job["nproc"]))
    exec(compile(src, "program.py", "exec"), {"__name__": "__main__"})
    sys.stdout.flush()
    os.write(w, TOKEN)


def kill_uid(uid):
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def run(job):
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            child(job, w)
            code = 0
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        if job["uid"] >= 0 and os.getuid() == job["uid"]:
            # as the job's uid: kill every leftover process of this job (not ourselves)
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)
        os._exit(code)
    os.close(w)
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    done = bool(poller.poll(job["timeout"] * 1000))
    os.close(pidfd)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if job["uid"] >= 0 and (not done or os.WIFSIGNALED(status)):
        kill_uid(job["uid"])
    os.set_blocking(r, False)
    try:
        ok = os.read(r, len(TOKEN) + 1) == TOKEN
    except BlockingIOError:
        ok = False
    os.close(r)
    while True:  # reap orphans re-parented to us (we are pid 1 of our namespace)
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    return {"done": done, "ok": ok, "status": status}


def main():
    for line in sys.stdin:
        res = run(json.loads(line))
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
