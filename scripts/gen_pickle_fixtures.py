#!/usr/bin/env python3
"""Generate the tiny fixtures for src/weights/pickle.rs tests.

Writes into tests/fixtures/pickle/:
  state_dict.bin   torch.save of a small state dict (f32, f16, bf16, i64, i32,
                   bool, f64): a tied pair, a transposed (non-contiguous) view,
                   a slice with a nonzero storage offset, a 0-dim scalar and an
                   empty tensor.
  state_dict.json  expected name -> {dtype, shape, hex}: hex is the contiguous
                   row-major little-endian bytes of the tensor.
  malicious.bin    zip with the torch layout whose data.pkl calls os.system.
  truncated.bin    the first half of state_dict.bin.
  state_dict_legacy.bin  the same state dict in torch.save's legacy (pre-1.6, non-zip)
                   format; state_dict.json describes it too. Its bytes differ from run
                   to run (torch names legacy storages by memory address).

Run from the repository root: python3 scripts/gen_pickle_fixtures.py
(`--only-legacy`: write state_dict_legacy.bin only.)
"""
import collections
import json
import os
import sys
import zipfile

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "pickle")

DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "Bool",
}


def tensor_bytes(t):
    t = t.contiguous()
    # bfloat16 has no numpy dtype; reinterpret the bits as int16.
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def state_dict():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1.25
    half = torch.tensor([[1.0, -2.5, 65504.0], [0.0009765625, -0.0, 3.14159]], dtype=torch.float16)
    bf = torch.tensor([1.0, -3.0e38, 1.0e-3, 7.5], dtype=torch.bfloat16)
    ids = torch.tensor([0, 1, -1, 2**40, -(2**62)], dtype=torch.int64)
    big = torch.arange(20, dtype=torch.int32).reshape(4, 5)
    sd = collections.OrderedDict()
    sd["encoder.weight"] = base
    sd["decoder.weight"] = base  # tied: the same tensor object under two names
    sd["encoder.weight_t"] = base.t()  # non-contiguous view of the same storage
    sd["encoder.row_slice"] = base[1:]  # storage offset 4, contiguous
    sd["half.weight"] = half
    sd["bf16.bias"] = bf
    sd["position_ids"] = ids
    sd["int.col_slice"] = big[1:, 2:4]  # offset and non-contiguous strides
    sd["mask"] = torch.tensor([True, False, True])
    sd["scalar"] = torch.tensor(2.5, dtype=torch.float64)
    sd["empty"] = torch.zeros(0, 3)
    return sd


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = state_dict()
    torch.save(sd, os.path.join(OUT, "state_dict_legacy.bin"), _use_new_zipfile_serialization=False)
    if sys.argv[1:] == ["--only-legacy"]:
        return
    path = os.path.join(OUT, "state_dict.bin")
    torch.save(sd, path)

    expected = {}
    for name, t in sd.items():
        expected[name] = {
            "dtype": DTYPES[t.dtype],
            "shape": list(t.shape),
            "hex": tensor_bytes(t).hex(),
        }
    with open(os.path.join(OUT, "state_dict.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")

    # Malicious: same zip layout, but data.pkl is `os.system("echo pwned")`.
    evil = (
        b"\x80\x02"  # PROTO 2
        b"cos\nsystem\n"  # GLOBAL os system
        b"X\x0a\x00\x00\x00echo pwned"  # BINUNICODE
        b"\x85"  # TUPLE1
        b"R"  # REDUCE
        b"."  # STOP
    )
    with zipfile.ZipFile(os.path.join(OUT, "malicious.bin"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("malicious/data.pkl", evil)
        z.writestr("malicious/byteorder", "little")
        z.writestr("malicious/version", "3\n")

    with open(path, "rb") as f:
        data = f.read()
    with open(os.path.join(OUT, "truncated.bin"), "wb") as f:
        f.write(data[: len(data) // 2])


if __name__ == "__main__":
    main()
