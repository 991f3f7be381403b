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
//!    view_metadata)`: `view_metadata` is `None` (torch >= 1.0 writes nothing
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
        o => return Err(format!("storage key list is a {}", o.kind())),
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
