"""Checks a safetensors file against the format's rules with the standard library only (and, where
the `safetensors` package is installed, loads it with that too). Used by checkpoint_resume.sh.
Usage: safetensors_check.py FILE [NAME ...]  -- each NAME must be a tensor of FILE."""
import json
import math
import struct
import sys

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
         "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check(path, names):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])  # header length, unsigned little-endian
    header_bytes = data[8:8 + n]
    assert len(header_bytes) == n, "truncated header"
    assert header_bytes[:1] == b"{", "header must start with '{'"
    assert n % 8 == 0, "header padded to 8 bytes"
    assert header_bytes.rstrip(b" ").endswith(b"}"), "only spaces may follow the JSON"
    pairs = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=lambda p: p)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "duplicate names"
    header = dict(pairs)
    meta = dict(header.pop("__metadata__", []))
    assert all(isinstance(v, str) for v in meta.values()), "metadata values are strings"
    spans = []
    for name, entry in header.items():
        entry = dict(entry)
        size = SIZES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        assert end - begin == math.prod(entry["shape"]) * size, name + ": size"
        spans.append((begin, end, name))
    pos = 0
    for begin, end, name in sorted(spans):
        assert begin == pos, name + ": hole or overlap"
        pos = end
    assert 8 + n + pos == len(data), "buffer must end with the last tensor"
    for name in names:
        assert name in header, "missing tensor " + name
    try:
        from safetensors.numpy import load_file  # optional: the reference reader
    except ImportError:
        load_file = None
    if load_file is not None:
        assert set(load_file(path)) == set(header)
    print(f"{path}: {len(header)} tensors, format rules hold"
          + (", loaded by safetensors" if load_file else ""))


if __name__ == "__main__":
    check(sys.argv[1], sys.argv[2:])
