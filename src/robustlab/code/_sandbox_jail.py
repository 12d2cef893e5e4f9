"""The sandbox's jail: mounts, the minimal read-only root, descriptors, rlimits, privilege drop.

Linux only, standard library only (``ctypes`` for mount, pivot_root, unshare, setns, prctl and
capset); used by ``_zygote.py`` as root of its namespaces (real root, or a user namespace's).
"""

import ctypes
import os
import platform
import resource
import struct
import sys

LIBC = ctypes.CDLL(None, use_errno=True)
NEWNS, NEWPID = 0x00020000, 0x20000000
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine(), -1)
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
