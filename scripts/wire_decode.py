#!/usr/bin/python3
"""Decodes pitlink wire-format messages (versions 1 and 2), following docs/wire-format.md.

Usage: wire_decode.py FILE...

Prints one JSON object per file, one per line, in the order given: the decoded message in the
shape of the golden records in agent/tests/golden/ (f64 values as the 16 hex digits of their bit
pattern, CAN payloads as lower-case hex padded to the payload length), or {"error": "..."} for a
file that is not a valid message. Exits with status 1 if any file failed, 2 on bad usage.

Needs Python 3.11 and the `zstandard` module (Debian: python3-zstandard).
"""

# Written from docs/wire-format.md alone, as a check that it is precise enough: a system test
# (tests/tests/wire_python.rs) compares this decoder with the agent's on the golden messages and
# on random, broken and mutated ones.

import json
import os
import sys

try:
    import zstandard
except ImportError:  # reported per file, so the caller still gets one JSON line per file
    zstandard = None

U16, U32, U64 = 16, 32, 64
MASK64 = (1 << 64) - 1

KINDS = ("Data", "Gap", "Run", "Heartbeat")
CAUSES = ("Evicted", "Dropped", "Damaged")

# CAN flag bits (the plain codec's CanFrame.flags and the columnar key flags).
EXTENDED, RTR, ERROR, FD, BRS, ESI = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
FD_LENS = frozenset((0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64))
# An error frame's id holds CAN_ERR_* class bits; linux/can.h gives them CAN_ERR_MASK (29
# bits). Bits error.h does not name yet (above CAN_ERR_CNT, 0x200) are accepted: a kernel may add
# classes, and one error frame must not make a whole batch unreadable.
CAN_ERR_MASK = 0x1FFFFFFF

MAX_SOURCE_LEN = 1024
MAX_COLUMNAR_BYTES = 64 * 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class DecodeError(Exception):
    """The message is malformed; the text says what and where."""


class Reader:
    """A cursor over bytes; every read checks the bytes left and names what it was reading."""

    def __init__(self, data, what):
        self.data = data
        self.pos = 0
        self.what = what

    def left(self):
        return len(self.data) - self.pos

    def fail(self, msg):
        raise DecodeError(f"{self.what} at byte {self.pos}: {msg}")

    def u8(self, name):
        if self.pos >= len(self.data):
            self.fail(f"{name}: unexpected end")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n, name):
        if n > self.left():
            self.fail(f"{name}: needs {n} bytes, {self.left()} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self, bits, name):
        """LEB128, at most ceil(bits/7) bytes, value must fit in `bits` bits."""
        start = self.pos
        max_bytes = (bits + 6) // 7
        value = 0
        for i in range(max_bytes):
            b = self.u8(name)
            value |= (b & 0x7F) << (7 * i)
            if b & 0x80 == 0:
                if value >> bits:
                    self.pos = start
                    self.fail(f"{name}: varint {value} does not fit in u{bits}")
                return value
        self.pos = start
        self.fail(f"{name}: varint longer than {max_bytes} bytes")

    def zigzag(self, name):
        n = self.varint(U64, name)
        return (n >> 1) ^ -(n & 1)

    def f64_bits(self, name):
        return int.from_bytes(self.take(8, name), "little")

    def byte_vec(self, name):
        n = self.varint(U64, f"{name} length")
        return self.take(n, name)

    def string(self, name):
        raw = self.byte_vec(name)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"{name}: invalid UTF-8 ({e.reason} at offset {e.start})")

    def count(self, name, min_elem_bytes):
        """A sequence length, bounded by the bytes left (each element takes at least
        `min_elem_bytes`), so no input makes the decoder allocate more than it was given."""
        n = self.varint(U64, name)
        if n * min_elem_bytes > self.left():
            self.fail(f"{name} {n} needs at least {n * min_elem_bytes} bytes, {self.left()} left")
        return n

    def option(self, name, read):
        tag = self.u8(f"{name} option tag")
        if tag == 0:
            return None
        if tag == 1:
            return read()
        self.pos -= 1
        self.fail(f"{name}: option tag {tag} is neither 0 nor 1")

    def end(self):
        if self.left():
            self.fail(f"{self.left()} unexpected trailing bytes")


def check_can_key(id_, flags, len_, len8_dlc, where):
    """The rules of docs/wire-format.md, "Key fields"; raises DecodeError naming the rule."""

    def bad(msg):
        raise DecodeError(
            f"{where}: {msg} (id {id_:#x}, flags {flags:#04x}, len {len_}, len8_dlc {len8_dlc})"
        )

    if flags & ~(EXTENDED | RTR | ERROR | FD | BRS | ESI):
        bad("unknown flag bits")
    if flags & ERROR:
        if flags != ERROR:
            bad("an error frame has exactly flag 0x04")
        if id_ & ~CAN_ERR_MASK:
            bad("error frame id has bits outside CAN_ERR_MASK (29 bits)")
    elif flags & RTR:
        if flags & ~(RTR | EXTENDED):
            bad("a remote frame has 0x02 and optionally 0x01 only")
    elif flags & FD:
        pass  # 0x08 with any of 0x01, 0x10, 0x20: every combination left is allowed
    elif flags & ~EXTENDED:
        bad("BRS/ESI without CAN FD")
    if not flags & ERROR:
        limit = 1 << 29 if flags & EXTENDED else 1 << 11
        if id_ >= limit:
            bad(f"id needs more than {limit.bit_length() - 1} bits")
    if flags & FD:
        if len_ not in FD_LENS:
            bad("not a CAN FD length")
    elif len_ > 8:
        bad("length above 8 for a classic, remote or error frame")
    if len8_dlc != 0:
        if flags & ~(EXTENDED | RTR) or len_ != 8:
            bad("len8_dlc on something else than a classic (data or remote) frame of length 8")
        if not 9 <= len8_dlc <= 15:
            bad("len8_dlc is neither 0 nor 9-15")


def payload_len(flags, len_):
    return 0 if flags & RTR else len_


def frame_json(t_us, id_, flags, len_, len8_dlc, payload):
    return {
        "data": bytes(payload).hex(),
        "flags": flags,
        "id": id_,
        "len": len_,
        "len8_dlc": len8_dlc,
        "t_us": t_us,
    }


def value_json(t_us, ch, bits):
    return {"bits": f"{bits:016x}", "ch": ch, "t_us": t_us}


# ----- bodies ---------------------------------------------------------------------------------


def data_plain(body, t_first, samples):
    r = Reader(body, "plain data body")
    source = r.string("source")
    readings = []
    # A sample is at least 1 + 1 + 8 bytes, a frame at least 1 + 1 + 1 + 1 + 1 + 1.
    nv = r.count("sample count", 10)
    for i in range(nv):
        ch = r.varint(U16, f"sample {i} channel")
        dt = r.varint(U64, f"sample {i} dt_us")
        bits = r.f64_bits(f"sample {i} value")
        readings.append(value_json((t_first + dt) & MASK64, ch, bits))
    nf = r.count("frame count", 6)
    for i in range(nf):
        dt = r.varint(U64, f"frame {i} dt_us")
        id_ = r.varint(U32, f"frame {i} id")
        flags = r.u8(f"frame {i} flags")
        len_ = r.u8(f"frame {i} len")
        len8_dlc = r.u8(f"frame {i} len8_dlc")
        data = r.byte_vec(f"frame {i} data")
        check_can_key(id_, flags, len_, len8_dlc, f"plain data body, frame {i}")
        plen = payload_len(flags, len_)
        if len(data) > plen:
            raise DecodeError(
                f"plain data body, frame {i}: {len(data)} data bytes for a payload of {plen}"
            )
        payload = data + bytes(plen - len(data))
        readings.append(frame_json((t_first + dt) & MASK64, id_, flags, len_, len8_dlc, payload))
    r.end()
    if nv + nf != samples:
        raise DecodeError(
            f"plain data body: {nv} values + {nf} frames, but the envelope says {samples} samples"
        )
    return {"readings": readings, "source": source}


def decompress_columnar(body, samples):
    if zstandard is None:
        raise DecodeError(
            "the Python module zstandard is missing (Debian: python3-zstandard; "
            "run scripts/setup.sh)"
        )
    if body[:4] != ZSTD_MAGIC:
        raise DecodeError("columnar body: not a zstd frame (bad magic number)")
    try:
        params = zstandard.get_frame_parameters(body)
    except zstandard.ZstdError as e:
        raise DecodeError(f"columnar body: bad zstd frame header: {e}") from None
    if params.content_size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        raise DecodeError("columnar body: the zstd frame does not state its content size")
    limit = min(88 * samples + 4096, MAX_COLUMNAR_BYTES)
    if params.content_size > limit:
        raise DecodeError(
            f"columnar body: zstd content size {params.content_size} above the limit {limit} "
            f"for {samples} samples"
        )
    if params.dict_id != 0:
        raise DecodeError(f"columnar body: the zstd frame needs dictionary {params.dict_id}")
    try:
        d = zstandard.ZstdDecompressor().decompressobj()
        layout = d.decompress(body)
        if not d.eof:
            raise DecodeError("columnar body: truncated zstd frame")
        if d.unused_data:
            raise DecodeError(
                f"columnar body: {len(d.unused_data)} bytes after the zstd frame"
            )
    except zstandard.ZstdError as e:
        raise DecodeError(f"columnar body: zstd: {e}") from None
    if len(layout) != params.content_size:
        raise DecodeError(
            f"columnar body: decompressed {len(layout)} bytes, header says {params.content_size}"
        )
    return layout


def chain_times(r, n, t_first, name):
    times = []
    t = t_first
    for i in range(n):
        t = (t + r.zigzag(f"{name} {i} time delta")) & MASK64
        times.append(t)
    return times


def columnar_values(r, nv, t_first):
    c = r.varint(U64, "channel count")
    if not 1 <= c <= nv:
        r.fail(f"channel count {c} not in 1..={nv}")
    channels = [r.varint(U16, f"channel {i}") for i in range(c)]
    idx = []
    for i in range(nv):
        k = r.varint(U64, f"value {i} channel index")
        if k >= c:
            r.fail(f"value {i} channel index {k} not below {c}")
        idx.append(k)
    times = chain_times(r, nv, t_first, "value")
    per_channel = [0] * c
    for k in idx:
        per_channel[k] += 1
    bits_of = [None] * c
    for ch in range(c):
        k = per_channel[ch]
        planes = [r.take(k, f"channel {ch} byte plane {p}") for p in range(8)]
        prev = 0
        out = []
        for i in range(k):
            x = 0
            for p in range(8):
                x |= planes[p][i] << (8 * p)
            prev ^= x
            out.append(prev)
        bits_of[ch] = out
    seen = [0] * c
    readings = []
    for i in range(nv):
        k = idx[i]
        readings.append(value_json(times[i], channels[k], bits_of[k][seen[k]]))
        seen[k] += 1
    return readings


def columnar_frames(r, nf, t_first):
    kn = r.varint(U64, "key count")
    if not 1 <= kn <= nf:
        r.fail(f"key count {kn} not in 1..={nf}")
    ids = [r.varint(U32, f"key {i} id") for i in range(kn)]
    flags = list(r.take(kn, "key flags"))
    lens = list(r.take(kn, "key lens"))
    dlcs = list(r.take(kn, "key len8_dlc"))
    preds = list(r.take(kn, "key predictors"))
    for i in range(kn):
        check_can_key(ids[i], flags[i], lens[i], dlcs[i], f"columnar key {i}")
        if preds[i] not in (0, 1):
            r.fail(f"key {i}: predictor {preds[i]} is neither 0 nor 1")
        if preds[i] == 1 and payload_len(flags[i], lens[i]) < 2:
            r.fail(f"key {i}: sum predictor on a payload of fewer than 2 bytes")
    sum_c = [r.u8(f"key {i} sum constant") if preds[i] == 1 else 0 for i in range(kn)]
    idx = []
    for i in range(nf):
        k = r.varint(U64, f"frame {i} key index")
        if k >= kn:
            r.fail(f"frame {i} key index {k} not below {kn}")
        idx.append(k)
    times = chain_times(r, nf, t_first, "frame")
    per_key = [0] * kn
    for k in idx:
        per_key[k] += 1
    payloads = [None] * kn
    for key in range(kn):
        m = per_key[key]
        plen = payload_len(flags[key], lens[key])
        stored = plen - preds[key]
        cols = [r.take(m, f"key {key} byte column {j}") for j in range(stored)]
        frames = [bytearray(plen) for _ in range(m)]
        for j in range(stored):
            col = cols[j]
            acc = 0
            for i in range(m):
                acc = (acc + col[i]) & 0xFF if i else col[0]
                frames[i][j] = acc
        if preds[key] == 1:
            for f in frames:
                f[plen - 1] = (sum_c[key] + sum(f[: plen - 1])) & 0xFF
        payloads[key] = frames
    seen = [0] * kn
    readings = []
    for i in range(nf):
        k = idx[i]
        readings.append(
            frame_json(times[i], ids[k], flags[k], lens[k], dlcs[k], payloads[k][seen[k]])
        )
        seen[k] += 1
    return readings


def data_columnar(body, t_first, samples):
    r = Reader(decompress_columnar(body, samples), "columnar layout")
    layout = r.u8("layout")
    if layout != 0:
        r.fail(f"unknown layout {layout}")
    s = r.varint(U64, "source length")
    if s > MAX_SOURCE_LEN:
        r.fail(f"source length {s} above {MAX_SOURCE_LEN}")
    raw = r.take(s, "source")
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        r.fail(f"source: invalid UTF-8 ({e.reason} at offset {e.start})")
    nv = r.varint(U64, "value count")
    nf = r.varint(U64, "frame count")
    if nv + nf != samples:
        r.fail(f"{nv} values + {nf} frames, but the envelope says {samples} samples")
    # Every value takes at least 1 index byte, 1 delta byte and 8 plane bytes; every frame at
    # least 1 index byte and 1 delta byte.
    if 10 * nv + 2 * nf > r.left():
        r.fail(f"{nv} values and {nf} frames cannot fit in the {r.left()} bytes left")
    readings = []
    if nv:
        readings += columnar_values(r, nv, t_first)
    if nf:
        readings += columnar_frames(r, nf, t_first)
    r.end()
    return {"readings": readings, "source": source}


def gap_body(body):
    r = Reader(body, "gap body")
    cause = r.varint(U32, "cause")
    if cause >= len(CAUSES):
        r.fail(f"unknown gap cause {cause}")
    run = r.varint(U32, "run")
    n = r.count("seqs count", 2)
    seqs = []
    for i in range(n):
        start = r.varint(U64, f"seqs {i} start")
        end = r.varint(U64, f"seqs {i} end")
        seqs.append([start, end])
    batches = r.varint(U64, "batches")
    samples = r.varint(U64, "samples")
    t_first = r.varint(U64, "t_first_us")
    t_last = r.varint(U64, "t_last_us")
    out = {
        "batches": batches,
        "cause": CAUSES[cause],
        "run": run,
        "samples": samples,
        "seqs": seqs,
        "t_first_us": t_first,
        "t_last_us": t_last,
    }
    r.end()
    return out


def run_body(body):
    r = Reader(body, "run body")
    out = {
        "previous_run": r.option("previous_run", lambda: r.varint(U32, "previous_run")),
        "previous_durable_last_seq": r.option(
            "previous_durable_last_seq", lambda: r.varint(U64, "previous_durable_last_seq")
        ),
    }
    r.end()
    return out


def heartbeat_body(body):
    r = Reader(body, "heartbeat body")
    out = {
        "next_seq": r.varint(U64, "next_seq"),
        "backlog_batches": r.varint(U64, "backlog_batches"),
    }
    r.end()
    return out


# ----- message --------------------------------------------------------------------------------


def decode(msg):
    """One whole message to its JSON record; raises DecodeError if it is malformed."""
    if not msg:
        raise DecodeError("empty message")
    version = msg[0]
    if version not in (1, 2):
        raise DecodeError(f"unknown format version {version}")
    r = Reader(msg[1:], "envelope")
    vehicle = r.string("vehicle")
    run = r.varint(U32, "id.run")
    seq = r.varint(U64, "id.seq")
    kind = r.varint(U32, "kind")
    if kind >= len(KINDS) or (kind == 3 and version < 2):
        r.fail(f"unknown kind {kind} for version {version}")
    t_first = r.varint(U64, "t_first_us")
    t_last = r.varint(U64, "t_last_us")
    samples = r.varint(U32, "samples")
    codec = r.u8("codec")
    body = r.byte_vec("body")
    r.end()
    if codec == 0:
        pass
    elif codec == 1 and version >= 2 and kind == 0:
        pass
    else:
        raise DecodeError(f"codec {codec} not allowed for a {KINDS[kind]} body in version {version}")
    if kind == 0:
        content = (data_columnar if codec == 1 else data_plain)(body, t_first, samples)
    elif kind == 1:
        content = gap_body(body)
    elif kind == 2:
        content = run_body(body)
    else:
        content = heartbeat_body(body)
    return {
        "codec": codec,
        "content": content,
        "kind": KINDS[kind],
        "run": run,
        "samples": samples,
        "seq": seq,
        "t_first_us": t_first,
        "t_last_us": t_last,
        "vehicle": vehicle,
        "version": version,
    }


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    failed = False
    for path in argv[1:]:
        try:
            with open(path, "rb") as f:
                record = decode(f.read())
        except DecodeError as e:
            record, failed = {"error": f"{path}: {e}"}, True
        except OSError as e:
            record, failed = {"error": f"{path}: cannot read: {e.strerror}"}, True
        except Exception as e:  # a decoder bug must still give a line, not a traceback
            record, failed = {"error": f"{path}: internal error: {type(e).__name__}: {e}"}, True
        print(json.dumps(record, sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
