//! Tests of the zip reader and the pickle machine.

use super::*;
use std::io::{Cursor, Write};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pickle")
        .join(name)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn read_bytes(bytes: Vec<u8>) -> Result<Vec<PickledTensor>> {
    read_pytorch_bin_from(Cursor::new(bytes), Path::new("mem.bin"))
}

fn fixture_pickle() -> Vec<u8> {
    let mut z =
        zip::ZipArchive::new(std::fs::File::open(fixture("state_dict.bin")).unwrap()).unwrap();
    let mut e = z.by_name("state_dict/data.pkl").unwrap();
    let mut v = Vec::new();
    e.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn reads_torch_state_dict_exactly() {
    let tensors = read_pytorch_bin(&fixture("state_dict.bin")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("state_dict.json")).unwrap())
            .unwrap();
    let expected = expected.as_object().unwrap();
    assert_eq!(tensors.len(), expected.len());
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "encoder.weight",
            "decoder.weight",
            "encoder.weight_t",
            "encoder.row_slice",
            "half.weight",
            "bf16.bias",
            "position_ids",
            "int.col_slice",
            "mask",
            "scalar",
            "empty"
        ]
    );
    for t in &tensors {
        let e = &expected[&t.name];
        assert_eq!(
            format!("{:?}", t.dtype),
            e["dtype"].as_str().unwrap(),
            "{}",
            t.name
        );
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{}", t.name);
        assert_eq!(t.data, hex(e["hex"].as_str().unwrap()), "{}", t.name);
        assert_eq!(
            t.data.len(),
            shape.iter().product::<usize>() * t.dtype.size()
        );
    }
    // Spot-check values, not just bytes against bytes.
    let f32s = |t: &PickledTensor| -> Vec<f32> {
        t.data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let by = |n: &str| tensors.iter().find(|t| t.name == n).unwrap();
    assert_eq!(f32s(by("encoder.weight"))[..3], [-1.25, -0.75, -0.25]);
    assert_eq!(by("decoder.weight").data, by("encoder.weight").data);
    assert_eq!(
        f32s(by("encoder.weight_t"))[..4],
        [-1.25, 0.75, 2.75, -0.75]
    );
    assert_eq!(f32s(by("encoder.row_slice"))[0], 0.75);
    let ids: Vec<i64> = by("position_ids")
        .data
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(ids, [0, 1, -1, 1 << 40, -(1 << 62)]);
    let cols: Vec<i32> = by("int.col_slice")
        .data
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(cols, [7, 8, 12, 13, 17, 18]);
    assert_eq!(by("scalar").shape, Vec::<usize>::new());
    assert_eq!(
        by("bf16.bias").data[..2],
        half::bf16::from_f32(1.0).to_le_bytes()
    );
    assert_eq!(
        by("half.weight").data[2..4],
        half::f16::from_f32(-2.5).to_le_bytes()
    );
}

#[test]
fn refuses_os_system() {
    let err = read_pytorch_bin(&fixture("malicious.bin"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'os.system'"), "{err}");
    assert!(err.contains("refusing to load"), "{err}");
}

#[test]
fn refuses_other_globals() {
    // builtins.eval via STACK_GLOBAL (protocol 4) and __builtin__.getattr.
    let p = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.";
    let err = parse_state_dict(p).unwrap_err();
    assert!(err.contains("'builtins.eval'"), "{err}");
    let p = b"\x80\x02c__builtin__\ngetattr\n).";
    let err = parse_state_dict(p).unwrap_err();
    assert!(err.contains("'__builtin__.getattr'"), "{err}");
    let p = b"\x80\x02ctorch\nComplexFloatStorage\n.";
    assert!(parse_state_dict(p)
        .unwrap_err()
        .contains("unsupported dtype"));
    let p = b"\x80\x02ctorch.storage\nUntypedStorage\n.";
    assert!(parse_state_dict(p)
        .unwrap_err()
        .contains("torch.storage.UntypedStorage"));
}

#[test]
fn unknown_opcode_is_named() {
    let err = parse_state_dict(b"\x80\x02}i.").unwrap_err(); // 'i' = INST
    assert!(err.contains("0x69"), "{err}");
    let err = parse_state_dict(b"\x80\x02\xff").unwrap_err();
    assert!(err.contains("0xff"), "{err}");
}

#[test]
fn truncated_file_is_an_error() {
    let err = read_pytorch_bin(&fixture("truncated.bin")).unwrap_err();
    assert!(matches!(err, Error::Weights { .. }), "{err}");
    let missing = read_pytorch_bin(&fixture("no_such_file.bin")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }));
    // Every prefix of the real file fails cleanly.
    let full = std::fs::read(fixture("state_dict.bin")).unwrap();
    for n in (0..full.len()).step_by(7) {
        assert!(read_bytes(full[..n].to_vec()).is_err(), "prefix {n}");
    }
}

#[test]
fn every_truncated_pickle_is_an_error() {
    let p = fixture_pickle();
    assert!(parse_state_dict(&p).is_ok());
    for n in 0..p.len() {
        assert!(parse_state_dict(&p[..n]).is_err(), "prefix {n}");
    }
}

#[test]
fn mutated_pickles_never_panic() {
    let p = fixture_pickle();
    let mut rng = crate::rng::Rng::new(0x9e37_79b9_7f4a_7c15u64);
    let mut rnd = || rng.next_u64();
    for _ in 0..20_000 {
        let mut q = p.clone();
        for _ in 0..1 + rnd() % 4 {
            let i = (rnd() as usize) % q.len();
            q[i] = rnd() as u8;
        }
        let _ = parse_state_dict(&q);
    }
}

#[test]
fn mutated_files_never_panic() {
    let full = std::fs::read(fixture("state_dict.bin")).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut q = full.clone();
        let i = (rnd() as usize) % q.len();
        q[i] = rnd() as u8;
        let _ = read_bytes(q);
    }
}

#[test]
fn hostile_structures_are_bounded() {
    // A million nested tuples: no recursion, so no stack overflow.
    let mut p = b"\x80\x02K\x01".to_vec();
    p.extend(vec![0x85u8; 1_000_000]);
    p.push(b'.');
    assert!(parse_state_dict(&p).unwrap_err().contains("tuple"));
    // Too many open MARKs.
    let mut p = b"\x80\x02".to_vec();
    p.extend(vec![b'('; 10_000]);
    assert!(parse_state_dict(&p).unwrap_err().contains("MARK"));
    // A list containing itself.
    let p = b"\x80\x02]q\x00h\x00a.";
    assert!(parse_state_dict(p).unwrap_err().contains("list"));
    // Unwritten memo slot, stack underflow, popping through a MARK.
    assert!(parse_state_dict(b"\x80\x02j\xff\xff\xff\xff.")
        .unwrap_err()
        .contains("memo"));
    assert!(parse_state_dict(b"\x80\x02R.")
        .unwrap_err()
        .contains("underflow"));
    assert!(parse_state_dict(b"\x80\x02}(s.")
        .unwrap_err()
        .contains("underflow"));
    assert!(parse_state_dict(b"\x80\x02.")
        .unwrap_err()
        .contains("underflow"));
    // Huge string lengths and LONG1 sizes.
    assert!(parse_state_dict(b"\x80\x02X\xff\xff\xff\xff")
        .unwrap_err()
        .contains("truncated"));
    assert!(parse_state_dict(b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
    assert!(parse_state_dict(b"\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.").is_err());
    // Wrong top-level objects.
    assert!(parse_state_dict(b"\x80\x02K\x05.")
        .unwrap_err()
        .contains("not a dict"));
    assert!(parse_state_dict(b"\x80\x02}X\x01\x00\x00\x00a}s.")
        .unwrap_err()
        .contains("nests dicts under 'a'"));
    assert_eq!(parse_state_dict(b"\x80\x02}.").unwrap(), vec![]);
}

/// A protocol-2 pickle of `{name: _rebuild_tensor_v2(storage, off, size, stride, False, OrderedDict())}`.
fn tensor_pickle(class: &str, numel: u8, off: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n".to_vec();
    p.extend(class.as_bytes());
    p.extend(b"\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
    p.push(numel);
    p.extend(b"tQK");
    p.push(off);
    for dims in [size, stride] {
        p.push(b'(');
        for &d in dims {
            p.extend([b'K', d]);
        }
        p.push(b't');
    }
    p.extend(b"\x89ccollections\nOrderedDict\n)RtRs.");
    p
}

#[test]
fn out_of_range_views_are_errors() {
    let storage: Vec<u8> = (0..24).collect(); // 6 f32
    let file = |pkl: &[u8], data: &[u8]| {
        zip_of(&[
            ("archive/data.pkl", pkl),
            ("archive/byteorder", b"little"),
            ("archive/data/0", data),
        ])
    };
    let ok = read_bytes(file(
        &tensor_pickle("FloatStorage", 6, 2, &[2, 2], &[1, 2]),
        &storage,
    ))
    .unwrap();
    assert_eq!(ok[0].shape, [2, 2]);
    assert_eq!(
        ok[0].data,
        [8, 9, 10, 11, 16, 17, 18, 19, 12, 13, 14, 15, 20, 21, 22, 23]
    );
    // Offset pushes the view past the storage.
    let err = read_bytes(file(
        &tensor_pickle("FloatStorage", 6, 3, &[2, 2], &[1, 2]),
        &storage,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("tensor 'w'"), "{err}");
    // Declared numel larger than the entry.
    let err = read_bytes(file(
        &tensor_pickle("FloatStorage", 7, 0, &[6], &[1]),
        &storage,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("need 28"), "{err}");
    // Size and stride of different lengths.
    assert!(read_bytes(file(
        &tensor_pickle("FloatStorage", 6, 0, &[6], &[1, 1]),
        &storage
    ))
    .is_err());
    // Stride 0 (expand) of one element.
    let ok = read_bytes(file(
        &tensor_pickle("HalfStorage", 1, 0, &[1, 3], &[0, 0]),
        &storage[..2],
    ))
    .unwrap();
    assert_eq!(ok[0].data, [0, 1, 0, 1, 0, 1]);
    // Missing storage entry and big-endian files.
    let no_data = zip_of(&[(
        "archive/data.pkl",
        &tensor_pickle("FloatStorage", 6, 0, &[6], &[1]),
    )]);
    assert!(read_bytes(no_data)
        .unwrap_err()
        .to_string()
        .contains("archive/data/0"));
    let be = zip_of(&[("x/data.pkl", b"\x80\x02}."), ("x/byteorder", b"big")]);
    assert!(read_bytes(be).unwrap_err().to_string().contains("big"));
    // Not a zip at all (legacy torch.save format).
    assert!(read_bytes(b"\x80\x02\x8a\x0alegacy".to_vec())
        .unwrap_err()
        .to_string()
        .contains("zip"));
    // Top folder named after the file stem; no byteorder entry.
    let ok = zip_of(&[
        (
            "my_model/data.pkl",
            &tensor_pickle("FloatStorage", 6, 0, &[3, 2], &[2, 1]),
        ),
        ("my_model/data/0", &storage),
    ]);
    assert_eq!(read_bytes(ok).unwrap()[0].data, storage);
}

#[test]
fn gather_matches_naive_indexing() {
    // 3-d permuted view with an offset, over i16 elements.
    let src: Vec<u8> = (0..200u8).collect();
    let (size, stride, off) = ([2usize, 3, 4], [1usize, 16, 3], 5usize);
    let got = gather(&src, 2, off, &size, &stride).unwrap();
    let mut want = Vec::new();
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                let e = off + i * stride[0] + j * stride[1] + k * stride[2];
                want.extend_from_slice(&src[e * 2..e * 2 + 2]);
            }
        }
    }
    assert_eq!(got, want);
    assert!(gather(&src, 2, 0, &[usize::MAX, 2], &[1, 1]).is_err());
    assert!(gather(&src, 2, 0, &[1 << 40], &[0]).is_err());
    assert_eq!(
        gather(&src, 2, 1000, &[0, 5], &[5, 1]).unwrap(),
        Vec::<u8>::new()
    );
}
