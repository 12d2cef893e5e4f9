"""The sandbox's wire format: plain data only, so nothing a sandboxed program sends can run code.

Frames are a 4-byte big-endian length and one tagged value: ``N`` ``T`` ``F`` (None, True,
False), ``i`` (signed big-endian int), ``f`` / ``c`` (IEEE doubles), ``s`` / ``b`` (UTF-8 with
surrogates / bytes), ``l`` ``t`` ``S`` ``z`` ``d`` (list, tuple, set, frozenset, dict; a count,
then the items). Both processes encode; the checker's :func:`dec` is the trusted side: it returns
only builtin types, nesting at most 100 deep, and raises ``ValueError`` / ``struct.error`` /
``TypeError`` / ``UnicodeError`` on anything malformed. Standard library only (the zygote
imports it before it drops into its skeleton root).

Example::

    out = []
    enc({"a": (1, 2.5, None)}, out)
    dec(b"".join(out))[0]          # {'a': (1, 2.5, None)}
"""

import struct

MAX_FRAME = 64 << 20
MAX_DEPTH = 100


def enc(v, out, depth=0):
    if depth > MAX_DEPTH:
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
    if depth > MAX_DEPTH:
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
