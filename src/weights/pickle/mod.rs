//! Reading PyTorch `pytorch_model.bin` files (the zip format of `torch.save`)
//! without executing anything. The pickle machine here also serves the
//! legacy format ([`super::torch_legacy`]).
//!
//! The file is a zip holding `<top>/data.pkl` (a pickle, protocol 2 by default)
//! and `<top>/data/<key>` (raw little-endian storages). The pickle is run by a
//! small, restricted stack machine: it knows only the opcodes `torch.save`
//! writes (plus a few harmless ones of protocols 3-4), and a GLOBAL may only name
//! `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` (and its
//! relatives) or a `torch.*Storage` class. Nothing is ever imported or called:
//! "calling" a whitelisted global just builds a plain value (a dict, a tensor
//! description). Every other global is refused by name.
//!
//! What torch 2.9 writes for a state dict (seen with `pickletools.dis`):
//! `PROTO 2`, `GLOBAL 'collections OrderedDict'` + `EMPTY_TUPLE` + `REDUCE`,
//! then `MARK`, per tensor `BINUNICODE name`,
//! `GLOBAL 'torch._utils _rebuild_tensor_v2'`, `MARK MARK 'storage'
//! GLOBAL 'torch FloatStorage' '<key>' 'cpu' BININT1 numel TUPLE BINPERSID`,
//! offset, size and stride tuples (`BININT1/BININT2/BININT`, `TUPLE1/2/3`,
//! `EMPTY_TUPLE`), `NEWFALSE`, an empty OrderedDict for the backward hooks,
//! `TUPLE REDUCE`; finally `SETITEMS`, for `module.state_dict()` a `BUILD` with
//! `{'_metadata': ...}`, and `STOP`. Everything is memoized with `BINPUT`;
//! a tied tensor is a `BINGET` of the first tensor, and views of one storage
//! repeat the persistent id with the same key. `nn.Parameter` values go through
//! `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`.
//!
//! The machine keeps every object in a flat arena and refers to objects by index,
//! so nothing recurses (no stack overflow on deep nesting) and cycles made
//! through the memo are harmless. Its memory is bounded by the size of the
//! pickle, which is itself capped.
//!
//! Layout: this file is the zip container and the public types; `vm` the
//! stack machine; `torch` what torch's globals and persistent ids mean (the
//! whitelist, `_rebuild_tensor*`, storages, the state dict); `gather` copies
//! a tensor's view out of its storage bytes.

mod gather;
#[cfg(test)]
mod tests;
mod torch;
mod vm;

pub(in crate::weights) use gather::{gather, StorageRef};
pub(in crate::weights) use torch::state_dict_tensors;
pub(in crate::weights) use vm::{Container, Obj, Vm, H};

use gather::is_whole_storage;
use torch::parse_state_dict;

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;

use crate::error::{Error, Result};

/// Element type of a tensor, as given by its torch storage class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtDType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl PtDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            PtDType::F64 | PtDType::I64 => 8,
            PtDType::F32 | PtDType::I32 => 4,
            PtDType::F16 | PtDType::BF16 | PtDType::I16 => 2,
            PtDType::I8 | PtDType::U8 | PtDType::Bool => 1,
        }
    }

    /// The dtype of a `torch.<name>` storage class, if it is one we read.
    fn from_storage_class(name: &str) -> Option<PtDType> {
        Some(match name {
            "FloatStorage" => PtDType::F32,
            "HalfStorage" => PtDType::F16,
            "BFloat16Storage" => PtDType::BF16,
            "DoubleStorage" => PtDType::F64,
            "LongStorage" => PtDType::I64,
            "IntStorage" => PtDType::I32,
            "ShortStorage" => PtDType::I16,
            "CharStorage" => PtDType::I8,
            "ByteStorage" => PtDType::U8,
            "BoolStorage" => PtDType::Bool,
            _ => return None,
        })
    }
}

/// One tensor of the state dict, with its own bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct PickledTensor {
    pub name: String,
    pub dtype: PtDType,
    pub shape: Vec<usize>,
    /// Contiguous row-major little-endian bytes of exactly this tensor
    /// (storage offset and strides applied).
    pub data: Vec<u8>,
}

/// Largest `data.pkl` we accept. A BERT-large pickle is about 30 KB, one with
/// 10k tensors about 2 MB. Every opcode allocates at most one small object, so
/// this also bounds the machine's memory.
pub(super) const MAX_PICKLE_BYTES: u64 = 16 << 20;
/// Most dimensions a tensor may have.
pub(super) const MAX_NDIM: usize = 64;
/// Most nested MARKs open at once.
pub(super) const MAX_MARK_DEPTH: usize = 4096;
/// A tensor may repeat storage elements (stride 0, as `expand` makes) but its
/// bytes may exceed its storage's only up to this much.
pub(super) const MAX_EXPANDED_BYTES: usize = 1 << 30;
/// Deflate can not expand by more than about 1032:1; anything claiming more is
/// a zip bomb.
const MAX_DEFLATE_RATIO: u64 = 1100;

/// Read every tensor of a `torch.save`d state dict (new zip format).
///
/// The top-level object must be a dict (usually an `OrderedDict`) with string
/// keys; tensor values are returned in dict order, other values are skipped.
/// A name stored twice (tied weights) is returned twice with its own bytes.
pub fn read_pytorch_bin(path: &Path) -> Result<Vec<PickledTensor>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_pytorch_bin_from(std::io::BufReader::new(file), path)
}

/// [`read_pytorch_bin`] over any seekable reader; `path` is only used in errors.
pub fn read_pytorch_bin_from<R: Read + Seek>(reader: R, path: &Path) -> Result<Vec<PickledTensor>> {
    let werr = |msg: String| Error::weights(path, msg);
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| {
        werr(format!(
            "not a readable zip archive ({e}), so not a torch.save file of the zip format"
        ))
    })?;

    // Find `<top>/data.pkl`; the top folder's name varies.
    let mut pkl_names: Vec<String> = zip
        .file_names()
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .map(str::to_owned)
        .collect();
    pkl_names.sort();
    let pkl_name = match pkl_names.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(werr(
                "zip has no <top>/data.pkl; not a torch.save file".into(),
            ))
        }
        many => {
            return Err(werr(format!(
                "zip has several pickles: {}",
                many.join(", ")
            )))
        }
    };
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];

    if let Ok(entry) = zip.by_name(&format!("{prefix}byteorder")) {
        let order = read_entry(entry, 16).map_err(|m| werr(format!("{prefix}byteorder: {m}")))?;
        if order.trim_ascii() != b"little" {
            return Err(werr(format!(
                "byte order is '{}'; only little-endian files are supported",
                String::from_utf8_lossy(order.trim_ascii())
            )));
        }
    }

    let pickle = {
        let entry = zip
            .by_name(&pkl_name)
            .map_err(|e| werr(format!("{pkl_name}: {e}")))?;
        read_entry(entry, MAX_PICKLE_BYTES).map_err(|m| werr(format!("{pkl_name}: {m}")))?
    };
    let refs = parse_state_dict(&pickle).map_err(|m| werr(format!("{pkl_name}: {m}")))?;

    // Read each storage once; drop it after its last use (moving it out whole
    // when the last user is a plain view of all of it).
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for r in &refs {
        *uses.entry(r.storage.key.as_str()).or_default() += 1;
    }
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(refs.len());
    for r in &refs {
        let st = &r.storage;
        let terr = |msg: String| werr(format!("tensor '{}': {msg}", r.name));
        let esize = st.dtype.size();
        let storage_bytes = st
            .numel
            .checked_mul(esize)
            .ok_or_else(|| terr(format!("storage '{}' size overflows", st.key)))?;
        if !cache.contains_key(&st.key) {
            let entry_name = format!("{prefix}data/{}", st.key);
            let entry = zip
                .by_name(&entry_name)
                .map_err(|e| terr(format!("storage {entry_name}: {e}")))?;
            if entry.size() != storage_bytes as u64 {
                return Err(terr(format!(
                    "storage {entry_name} has {} bytes, its {} elements of {:?} need {storage_bytes}",
                    entry.size(),
                    st.numel,
                    st.dtype
                )));
            }
            let bytes = read_entry(entry, storage_bytes as u64)
                .map_err(|m| terr(format!("storage {entry_name}: {m}")))?;
            cache.insert(st.key.clone(), bytes);
        }
        // Two tensors may name one storage with different sizes or dtypes.
        let cached = cache[&st.key].len();
        if cached != storage_bytes {
            return Err(terr(format!(
                "storage '{}' is {storage_bytes} bytes here but {cached} bytes for an earlier tensor",
                st.key
            )));
        }
        let left = uses.get_mut(st.key.as_str()).expect("counted above");
        *left -= 1;
        let last_use = *left == 0;
        let src = &cache[&st.key][..storage_bytes];
        let data =
            if last_use && is_whole_storage(r, st.numel) && cache[&st.key].len() == storage_bytes {
                cache.remove(&st.key).expect("present")
            } else {
                let d = gather(src, esize, r.offset, &r.size, &r.stride).map_err(terr)?;
                if last_use {
                    cache.remove(&st.key);
                }
                d
            };
        out.push(PickledTensor {
            name: r.name.clone(),
            dtype: st.dtype,
            shape: r.size.clone(),
            data,
        });
    }
    Ok(out)
}

/// Read a zip entry fully, refusing more than `max` bytes and zip bombs.
fn read_entry<R: Read>(
    entry: zip::read::ZipFile<'_, R>,
    max: u64,
) -> std::result::Result<Vec<u8>, String> {
    let size = entry.size();
    if size > max {
        return Err(format!(
            "entry has {size} bytes, more than the {max} allowed"
        ));
    }
    if entry.compression() != zip::CompressionMethod::Stored
        && size
            > entry
                .compressed_size()
                .saturating_mul(MAX_DEFLATE_RATIO)
                .saturating_add(4096)
    {
        return Err(format!(
            "entry claims {size} bytes from {} compressed; refusing (zip bomb?)",
            entry.compressed_size()
        ));
    }
    let mut buf = Vec::with_capacity(size.min(1 << 26) as usize);
    entry
        .take(size)
        .read_to_end(&mut buf)
        .map_err(|e| format!("read failed: {e}"))?;
    if buf.len() as u64 != size {
        return Err(format!("truncated: {} of {size} bytes", buf.len()));
    }
    Ok(buf)
}
