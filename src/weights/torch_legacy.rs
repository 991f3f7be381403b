//! Reading `torch.save` files in the legacy format (torch before 1.6, or
//! `_use_new_zipfile_serialization=False`) with the restricted pickle machine
//! of [`super::pickle`]: nothing is executed, the same globals are allowed.
//!
//! The layout, from torch/serialization.py (`_legacy_save` / `_legacy_load`),
//! is five blocks back to back:
//! 1. a pickle of the magic number `0x1950a86a20f9469cfc6c` (a 10-byte LONG1);
//! 2. a pickle of the format version, 1001;
//! 3. a pickle of `sys_info`: `{'protocol_version', 'little_endian',
//!    'type_sizes'}`; the storages below are in the writer's byte order;
//! 4. the pickled state dict, as the zip format's `data.pkl` except that a
//!    persistent id is `('storage', torch.XStorage, key, location, numel,
//!    view_metadata)`: `view_metadata` is `None` (torch 2.x writes nothing
//!    else) or `(view_key, offset, view_numel)`, the tensor's storage then
//!    being that slice of storage `key`;
//! 5. a pickle of the list of storage keys (sorted as strings), then for each
//!    key in that order its element count as an 8-byte integer and its raw
//!    bytes (`count * element size`).
//!
//! Keys are the storages' addresses in the writer's memory, so tensors that
//! share a storage (a tied decoder, slices of one buffer) name the same key;
//! the first persistent id of a key fixes its dtype and size, as in torch.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use super::pickle::{
    gather, state_dict_tensors, Container, Obj, PickledTensor, PtDType, StorageRef, Vm, H,
    MAX_PICKLE_BYTES,
};
use crate::error::{Error, Result};

/// `torch.serialization.MAGIC_NUMBER`.
const MAGIC_NUMBER: i128 = 0x1950a86a20f9469cfc6c;
/// `torch.serialization.PROTOCOL_VERSION`.
const PROTOCOL_VERSION: i64 = 1001;

/// Read every tensor of a legacy `torch.save`d state dict held in `file`
/// (usually a memory map); `path` is only used in errors. Tensors come in
/// dict order, each with its own contiguous bytes, as with the zip reader.
pub fn read_legacy_bytes(file: &[u8], path: &Path) -> Result<Vec<PickledTensor>> {
    read(file).map_err(|m| Error::weights(path, format!("legacy torch.save format: {m}")))
}

fn read(file: &[u8]) -> std::result::Result<Vec<PickledTensor>, String> {
    if file.get(257..262) == Some(b"ustar") {
        return Err(
            "this is a tar archive, the torch.save format of early PyTorch \
                    versions, which bertrt does not read; load it with that torch and \
                    save the state dict again"
                .into(),
        );
    }
    let mut pos = 0usize;

    let (vm, magic) = run_pickle(file, &mut pos, "magic number").map_err(|m| {
        format!("neither a zip archive (torch >= 1.6) nor a legacy torch.save file: {m}")
    })?;
    if !matches!(vm.obj(magic), Obj::Long(MAGIC_NUMBER)) {
        return Err(format!(
            "the first pickle is a {}, not torch's magic number; not a torch.save file",
            vm.obj(magic).kind()
        ));
    }

    let (vm, version) = run_pickle(file, &mut pos, "format version")?;
    match vm.obj(version) {
        Obj::Int(PROTOCOL_VERSION) => {}
        Obj::Int(v) => {
            return Err(format!(
                "format version {v}; only {PROTOCOL_VERSION} exists"
            ))
        }
        o => return Err(format!("format version is a {}, not an int", o.kind())),
    }

    let (vm, sys_info) = run_pickle(file, &mut pos, "sys_info")?;
    match dict_get(&vm, sys_info, "little_endian")? {
        Some(Obj::Bool(true)) => {}
        Some(Obj::Bool(false)) => {
            return Err(
                "written on a big-endian machine; only little-endian files are \
                        supported (load and save it again with torch on a little-endian machine)"
                    .into(),
            )
        }
        Some(o) => return Err(format!("sys_info 'little_endian' is a {}", o.kind())),
        None => return Err("sys_info has no 'little_endian', so the byte order is unknown".into()),
    }

    let (vm, top) = run_pickle(file, &mut pos, "state dict")?;
    let tensors = state_dict_tensors(&vm, top).map_err(|m| format!("state dict: {m}"))?;
    let declared = vm.storages()?;
    let storages = declared_storages(&declared)?;

    let (vm, list) = run_pickle(file, &mut pos, "storage key list")?;
    let keys: Vec<&str> = match vm.obj(list) {
        Obj::List(items) => items
            .iter()
            .map(|&h| vm.str_of(h))
            .collect::<std::result::Result<_, _>>()
            .map_err(|m| format!("storage key list: {m}"))?,
        o => {
            return Err(format!(
                "storage key list: expected a list, found {}",
                o.kind()
            ))
        }
    };

    let mut ranges: HashMap<&str, Range<usize>> = HashMap::new();
    for key in keys {
        let Some(&(dtype, numel)) = storages.roots.get(key) else {
            return Err(format!(
                "storage '{}' is in the storage key list but the state dict never names it",
                key.escape_debug()
            ));
        };
        if ranges.contains_key(key) {
            return Err(format!("storage '{key}' is listed twice"));
        }
        let count_bytes = file
            .get(pos..pos.saturating_add(8))
            .ok_or_else(|| truncated(file, pos, 8, key))?;
        let count = i64::from_le_bytes(count_bytes.try_into().expect("8 bytes"));
        if usize::try_from(count).ok() != Some(numel) {
            return Err(format!(
                "storage '{key}' at byte {pos}: the file says {count} elements, \
                 the state dict {numel} of {dtype:?}"
            ));
        }
        let nbytes = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| format!("storage '{key}' size overflows"))?;
        let start = pos + 8;
        let end = start
            .checked_add(nbytes)
            .filter(|&e| e <= file.len())
            .ok_or_else(|| truncated(file, start, nbytes, key))?;
        ranges.insert(key, start..end);
        pos = end;
    }

    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let terr = |m: String| format!("tensor '{}': {m}", t.name);
        let st = &t.storage;
        let root = ranges.get(st.key.as_str()).ok_or_else(|| {
            terr(format!(
                "its storage '{}' is missing from the storage key list, so the file has no bytes for it",
                st.key
            ))
        })?;
        // The first declaration of a key wins (torch keeps the first storage).
        let (dtype, _) = storages.roots[st.key.as_str()];
        let esize = dtype.size();
        let mut src = &file[root.clone()];
        if let Some(v) = &st.view {
            let (_, offset, numel) = storages.views[v.key.as_str()];
            let slice = offset
                .checked_add(numel)
                .and_then(|end| Some(offset.checked_mul(esize)?..end.checked_mul(esize)?))
                .filter(|r| r.end <= src.len())
                .ok_or_else(|| {
                    terr(format!(
                        "storage view '{}' (elements {offset}..+{numel}) lies outside storage '{}' of {} elements",
                        v.key,
                        st.key,
                        src.len() / esize
                    ))
                })?;
            src = &src[slice];
        }
        let data = gather(src, esize, t.offset, &t.size, &t.stride).map_err(terr)?;
        out.push(PickledTensor {
            name: t.name,
            dtype,
            shape: t.size,
            data,
        });
    }
    Ok(out)
}

/// Runs the pickle that starts at `*pos` and moves `*pos` past its STOP.
fn run_pickle<'a>(
    file: &'a [u8],
    pos: &mut usize,
    what: &str,
) -> std::result::Result<(Vm<'a>, H), String> {
    let start = (*pos).min(file.len());
    let window_end = file
        .len()
        .min(start.saturating_add(MAX_PICKLE_BYTES as usize));
    let mut vm = Vm::new(&file[start..window_end], Container::Legacy);
    let top = vm.run().map_err(|m| {
        let capped = if window_end < file.len() {
            format!(
                " (pickles longer than {} MiB are refused)",
                MAX_PICKLE_BYTES >> 20
            )
        } else {
            String::new()
        };
        format!("{what} (a pickle at byte {start}): {m}{capped}")
    })?;
    *pos = start + vm.pos;
    Ok((vm, top))
}

fn dict_get<'v>(vm: &'v Vm, dict: H, key: &str) -> std::result::Result<Option<&'v Obj>, String> {
    let Obj::Dict(pairs) = vm.obj(dict) else {
        return Err(format!("sys_info is a {}, not a dict", vm.obj(dict).kind()));
    };
    for &(k, v) in pairs {
        if matches!(vm.obj(k), Obj::Str(s) if s == key) {
            return Ok(Some(vm.obj(v)));
        }
    }
    Ok(None)
}

fn truncated(file: &[u8], at: usize, need: usize, key: &str) -> String {
    format!(
        "file is truncated: storage '{key}' needs {need} bytes at byte {at}, the file has {}",
        file.len()
    )
}

/// Root storages (dtype, element count) and views (root key, offset, element
/// count in the root's dtype), by key, as their first persistent id declares them.
struct Declared<'a> {
    roots: HashMap<&'a str, (PtDType, usize)>,
    views: HashMap<&'a str, (&'a str, usize, usize)>,
}

/// torch keeps the first declaration of each key and would silently misread
/// a file that declares one differently later; its writer never does that,
/// so such a file is refused.
fn declared_storages(all: &[StorageRef]) -> std::result::Result<Declared<'_>, String> {
    let mut d = Declared {
        roots: HashMap::new(),
        views: HashMap::new(),
    };
    for s in all {
        let first = *d.roots.entry(&s.key).or_insert((s.dtype, s.numel));
        if first != (s.dtype, s.numel) {
            return Err(format!(
                "storage '{}' is declared as {} x {:?} and again as {} x {:?}",
                s.key, first.1, first.0, s.numel, s.dtype
            ));
        }
        if let Some(v) = &s.view {
            let this = (s.key.as_str(), v.offset, v.numel);
            let first = *d.views.entry(&v.key).or_insert(this);
            if first != this {
                return Err(format!(
                    "storage view '{}' is declared as {:?} and again as {:?} (root, offset, size)",
                    v.key, first, this
                ));
            }
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pickle")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn read_mem(bytes: &[u8]) -> Result<Vec<PickledTensor>> {
        read_legacy_bytes(bytes, Path::new("mem/legacy.bin"))
    }

    /// The error for `bytes`, checked to name the file.
    fn err_of(bytes: &[u8]) -> String {
        let e = read_mem(bytes).expect_err("should fail").to_string();
        assert!(e.contains("mem/legacy.bin"), "{e}");
        e
    }

    /// Storage key and byte range of its count and bytes.
    type Block = (String, Range<usize>);

    /// Byte ranges of the five pickles and of each storage block, found with
    /// the reader's own pickle runner.
    fn layout(file: &[u8]) -> (Vec<Range<usize>>, Vec<Block>) {
        let mut pos = 0;
        let mut pickles = Vec::new();
        let mut sizes = HashMap::new();
        let mut keys = Vec::new();
        for i in 0..5 {
            let start = pos;
            let (vm, top) = run_pickle(file, &mut pos, "test").unwrap();
            pickles.push(start..pos);
            if i == 3 {
                for s in vm.storages().unwrap() {
                    sizes.insert(s.key.clone(), s.numel * s.dtype.size());
                }
            }
            if let (4, Obj::List(items)) = (i, vm.obj(top)) {
                keys = items
                    .iter()
                    .map(|&h| vm.str_of(h).unwrap().to_owned())
                    .collect();
            }
        }
        let mut blocks = Vec::new();
        for k in keys {
            let end = pos + 8 + sizes[&k];
            blocks.push((k, pos..end));
            pos = end;
        }
        assert_eq!(pos, file.len());
        (pickles, blocks)
    }

    fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len())
            .position(|w| w == needle)
            .expect("pattern in fixture")
    }

    /// Where the persistent id of tensor `name` ends with `None` (no view)
    /// and where its storage offset's BININT1 byte is:
    /// `... N t q <memo> Q K <offset>`.
    fn pid_none_and_offset(file: &[u8], name: &str) -> (usize, usize) {
        let from = find(file, name.as_bytes());
        let i = (from..file.len() - 6)
            .find(|&i| file[i] == b'N' && file[i + 1] == b't' && file[i + 2] == b'q')
            .expect("persistent id");
        assert_eq!(&file[i + 4..i + 6], b"QK", "layout of the fixture's pickle");
        (i, i + 6)
    }

    #[test]
    fn reads_what_torch_wrote() {
        let legacy = read_mem(&fixture("state_dict_legacy.bin")).unwrap();
        let expected: serde_json::Value =
            serde_json::from_slice(&fixture("state_dict.json")).unwrap();
        let expected = expected.as_object().unwrap();
        assert_eq!(legacy.len(), expected.len());
        for t in &legacy {
            let e = &expected[&t.name];
            assert_eq!(format!("{:?}", t.dtype), e["dtype"], "{}", t.name);
            assert_eq!(serde_json::json!(t.shape), e["shape"], "{}", t.name);
            let hex: String = t.data.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, e["hex"].as_str().unwrap(), "{}", t.name);
        }
        // Exactly what the zip reader makes of the same state dict.
        let zip = super::super::pickle::read_pytorch_bin_from(
            std::io::Cursor::new(fixture("state_dict.bin")),
            Path::new("zip.bin"),
        )
        .unwrap();
        assert_eq!(legacy, zip);
    }

    #[test]
    fn big_endian_files_are_refused() {
        let mut file = fixture("state_dict_legacy.bin");
        let (pickles, _) = layout(&file);
        // `X 'little_endian' q <memo> NEWTRUE`
        let at = pickles[2].start + find(&file[pickles[2].clone()], b"little_endian") + 15;
        assert_eq!(file[at], 0x88);
        file[at] = 0x89;
        let e = err_of(&file);
        assert!(e.contains("big-endian"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let file = fixture("state_dict_legacy.bin");
        for n in 0..file.len() {
            err_of(&file[..n]);
        }
        let (_, blocks) = layout(&file);
        let last = &blocks.last().unwrap().1;
        let e = err_of(&file[..last.end - 1]);
        assert!(e.contains("truncated") && e.contains("needs"), "{e}");
    }

    #[test]
    fn wrong_storage_counts_are_errors() {
        let file = fixture("state_dict_legacy.bin");
        let (_, blocks) = layout(&file);
        let (key, block) = &blocks[0];
        let count = i64::from_le_bytes(file[block.start..block.start + 8].try_into().unwrap());
        for bad in [count + 1, count - 1, -1, i64::MAX] {
            let mut f = file.clone();
            f[block.start..block.start + 8].copy_from_slice(&bad.to_le_bytes());
            let e = err_of(&f);
            assert!(
                e.contains(&format!("storage '{key}'")) && e.contains(&format!("says {bad}")),
                "{e}"
            );
        }
    }

    #[test]
    fn offsets_past_the_storage_are_errors() {
        let mut file = fixture("state_dict_legacy.bin");
        let (_, offset_at) = pid_none_and_offset(&file, "encoder.row_slice");
        assert_eq!(file[offset_at], 4);
        file[offset_at] = 5; // 5 + 8 elements > the 12 of the storage
        let e = err_of(&file);
        assert!(
            e.contains("tensor 'encoder.row_slice'") && e.contains("reaches element 12"),
            "{e}"
        );
    }

    #[test]
    fn key_list_must_match_the_state_dict() {
        let file = fixture("state_dict_legacy.bin");
        let (pickles, blocks) = layout(&file);
        let list_pickle = |keys: &[&str]| {
            let mut p = b"\x80\x02](".to_vec();
            for k in keys {
                p.push(b'X');
                p.extend((k.len() as u32).to_le_bytes());
                p.extend(k.as_bytes());
            }
            p.extend(b"e.");
            p
        };
        let keys: Vec<&str> = blocks.iter().map(|b| b.0.as_str()).collect();
        let with_list =
            |list: Vec<u8>, data: &[u8]| [&file[..pickles[4].start], &list, data].concat();
        // The list as written, rebuilt: reads fine.
        let storages = &file[pickles[4].end..];
        read_mem(&with_list(list_pickle(&keys), storages)).unwrap();
        // The last key and its bytes gone.
        let (last, last_block) = blocks.last().unwrap();
        let data = &file[pickles[4].end..last_block.start];
        let e = err_of(&with_list(list_pickle(&keys[..keys.len() - 1]), data));
        assert!(
            e.contains(&format!(
                "storage '{last}' is missing from the storage key list"
            )),
            "{e}"
        );
        // A key listed twice, a key nobody names.
        let twice = [&keys[..], &keys[..1]].concat();
        let e = err_of(&with_list(list_pickle(&twice), storages));
        assert!(e.contains("listed twice"), "{e}");
        let e = err_of(&with_list(
            list_pickle(&[&keys[..], &["7"]].concat()),
            storages,
        ));
        assert!(
            e.contains("storage '7'") && e.contains("never names it"),
            "{e}"
        );
        // Not a list of strings.
        let e = err_of(&with_list(b"\x80\x02K\x01.".to_vec(), storages));
        assert!(
            e.contains("storage key list: expected a list, found int"),
            "{e}"
        );
    }

    /// Old torch wrote `(view_key, offset, numel)` for a tensor on a slice
    /// of a storage; the tensor's own offset then counts from the slice.
    #[test]
    fn storage_views_are_slices_of_their_root() {
        let file = fixture("state_dict_legacy.bin");
        let good = read_mem(&file).unwrap();
        let row_slice = |ts: &[PickledTensor]| {
            ts.iter()
                .find(|t| t.name == "encoder.row_slice")
                .unwrap()
                .data
                .clone()
        };
        // `encoder.row_slice` is base[1:]: storage offset 4 of 12 elements.
        let with_view = |view_offset: u8, view_numel: u8, tensor_offset: u8| {
            let (none_at, offset_at) = pid_none_and_offset(&file, "encoder.row_slice");
            let mut f = file.clone();
            f[offset_at] = tensor_offset;
            let view = [
                b"(X\x01\x00\x00\x00vK",
                &[view_offset][..],
                b"K",
                &[view_numel],
                b"t",
            ];
            f.splice(none_at..none_at + 1, view.concat());
            f
        };
        let viewed = read_mem(&with_view(4, 8, 0)).unwrap();
        assert_eq!(row_slice(&viewed), row_slice(&good));
        let viewed = read_mem(&with_view(2, 10, 2)).unwrap();
        assert_eq!(row_slice(&viewed), row_slice(&good));
        // The tensor's offset is bounded by the slice, not the root.
        let e = err_of(&with_view(4, 8, 4));
        assert!(
            e.contains("'encoder.row_slice'") && e.contains("storage of 8"),
            "{e}"
        );
        let e = err_of(&with_view(8, 8, 0));
        assert!(e.contains("lies outside storage"), "{e}");
    }

    #[test]
    fn other_files_are_named() {
        let e = err_of(b"hello, world");
        assert!(e.contains("neither a zip archive"), "{e}");
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(err_of(&tar).contains("tar archive"));
        // A pickled dict instead of the magic number.
        let e = err_of(b"\x80\x02}.");
        assert!(e.contains("not torch's magic number"), "{e}");
        // Another format version.
        let mut file = fixture("state_dict_legacy.bin");
        let (pickles, _) = layout(&file);
        assert_eq!(&file[pickles[1].clone()], b"\x80\x02M\xe9\x03.");
        file[pickles[1].start + 3] = 0xea;
        assert!(err_of(&file).contains("format version 1002"));
    }

    #[test]
    fn mutated_files_never_panic() {
        let file = fixture("state_dict_legacy.bin");
        let mut rng = crate::rng::Rng::new(0x2545_f491_4f6c_dd1du64);
        let mut rnd = || rng.next_u64();
        for _ in 0..5000 {
            let mut f = file.clone();
            for _ in 0..1 + rnd() % 3 {
                let i = (rnd() as usize) % f.len();
                f[i] = rnd() as u8;
            }
            let _ = read_mem(&f);
        }
    }
}
