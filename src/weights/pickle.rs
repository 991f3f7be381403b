//! Reading PyTorch `pytorch_model.bin` files (the zip format of `torch.save`)
//! without executing anything.
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
const MAX_PICKLE_BYTES: u64 = 16 << 20;
/// Most dimensions a tensor may have.
const MAX_NDIM: usize = 64;
/// Most nested MARKs open at once.
const MAX_MARK_DEPTH: usize = 4096;
/// A tensor may repeat storage elements (stride 0, as `expand` makes) but its
/// bytes may exceed its storage's only up to this much.
const MAX_EXPANDED_BYTES: usize = 1 << 30;
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
            "not a readable zip ({e}); only the zip format of torch.save (torch >= 1.6) is supported"
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

// ---------------------------------------------------------------------------
// Tensor descriptions and gathering.

#[derive(Debug, Clone, PartialEq)]
struct StorageRef {
    dtype: PtDType,
    key: String,
    numel: usize,
}

/// A tensor as the pickle describes it, before its bytes are read.
#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    name: String,
    storage: StorageRef,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn numel_of(size: &[usize]) -> Option<usize> {
    size.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Whether the strides are row-major contiguous (dims of extent 1 ignored).
fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&d, &s) in size.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d);
    }
    true
}

fn is_whole_storage(r: &TensorRef, storage_numel: usize) -> bool {
    r.offset == 0 && numel_of(&r.size) == Some(storage_numel) && is_contiguous(&r.size, &r.stride)
}

/// Copy the elements of the view (offset, size, stride) of `src` into a
/// contiguous row-major buffer. Every index is checked against `src`.
fn gather(
    src: &[u8],
    esize: usize,
    offset: usize,
    size: &[usize],
    stride: &[usize],
) -> std::result::Result<Vec<u8>, String> {
    if size.len() != stride.len() {
        return Err(format!(
            "size {size:?} and stride {stride:?} differ in length"
        ));
    }
    let numel = numel_of(size).ok_or_else(|| format!("shape {size:?} overflows"))?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    let storage_numel = src.len() / esize;
    // Last element touched: offset + sum((d - 1) * s).
    let mut last = offset;
    for (&d, &s) in size.iter().zip(stride) {
        last = (d - 1)
            .checked_mul(s)
            .and_then(|x| x.checked_add(last))
            .ok_or_else(|| format!("shape {size:?} with stride {stride:?} overflows"))?;
    }
    if last >= storage_numel {
        return Err(format!(
            "view (offset {offset}, shape {size:?}, stride {stride:?}) reaches element {last} of a storage of {storage_numel}"
        ));
    }
    let nbytes = numel
        .checked_mul(esize)
        .ok_or_else(|| format!("shape {size:?} overflows"))?;
    if nbytes > src.len().max(MAX_EXPANDED_BYTES) {
        return Err(format!(
            "view of shape {size:?} repeats its {}-byte storage into {nbytes} bytes; refusing",
            src.len()
        ));
    }
    if is_contiguous(size, stride) {
        return Ok(src[offset * esize..offset * esize + nbytes].to_vec());
    }
    let mut out = Vec::with_capacity(nbytes);
    let nd = size.len();
    // The innermost dimension is copied as a run when its stride is 1.
    let (inner_n, inner_s) = (size[nd - 1], stride[nd - 1]);
    let mut idx = vec![0usize; nd - 1];
    loop {
        let base: usize = offset + idx.iter().zip(stride).map(|(&i, &s)| i * s).sum::<usize>();
        if inner_s == 1 {
            out.extend_from_slice(&src[base * esize..(base + inner_n) * esize]);
        } else {
            for j in 0..inner_n {
                let e = base + j * inner_s;
                out.extend_from_slice(&src[e * esize..(e + 1) * esize]);
            }
        }
        // Odometer over the outer dimensions.
        let mut k = nd - 1;
        loop {
            if k == 0 {
                debug_assert_eq!(out.len(), nbytes);
                return Ok(out);
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < size[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

// ---------------------------------------------------------------------------
// The restricted pickle machine.

/// The only callables a pickle may name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(PtDType),
}

fn resolve_global(module: &str, name: &str) -> std::result::Result<Global, String> {
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        ("torch", n) if n.ends_with("Storage") => match PtDType::from_storage_class(n) {
            Some(dt) => Global::Storage(dt),
            None => {
                return Err(format!(
                    "tensor storage 'torch.{n}' has an unsupported dtype"
                ))
            }
        },
        _ => {
            return Err(format!(
                "pickle references '{}.{}', which is not tensor storage; refusing to load",
                module.escape_debug(),
                name.escape_debug()
            ))
        }
    })
}

/// Index of an object in the arena.
type H = usize;

#[derive(Debug, Clone)]
enum Obj {
    None,
    /// Values the reader never needs are kept only as their kind.
    Bool,
    Int(i64),
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<H>),
    List(Vec<H>),
    /// Pairs in insertion order; duplicates are resolved when read.
    Dict(Vec<(H, H)>),
    Global(Global),
    /// A storage's dtype, key (a `Str`) and element count.
    Storage {
        dtype: PtDType,
        key: H,
        numel: usize,
    },
    /// Handles of a `Storage` and of the size and stride tuples, validated
    /// when the tensor is built; nothing is copied so repeats cost O(1).
    Tensor {
        storage: H,
        offset: usize,
        size: H,
        stride: H,
    },
}

impl Obj {
    fn kind(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool => "bool",
            Obj::Int(_) => "int",
            Obj::Float => "float",
            Obj::Str(_) => "str",
            Obj::Bytes => "bytes",
            Obj::Tuple(_) => "tuple",
            Obj::List(_) => "list",
            Obj::Dict(_) => "dict",
            Obj::Global(_) => "global",
            Obj::Storage { .. } => "storage",
            Obj::Tensor { .. } => "tensor",
        }
    }
}

type VmResult<T> = std::result::Result<T, String>;

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    arena: Vec<Obj>,
    stack: Vec<H>,
    marks: Vec<usize>,
    memo: HashMap<u32, H>,
}

impl<'a> Vm<'a> {
    fn new(data: &'a [u8]) -> Self {
        Vm {
            data,
            pos: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> VmResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "pickle is truncated: needs {n} more bytes at offset {}",
                    self.pos
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> VmResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn arr<const N: usize>(&mut self) -> VmResult<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn line(&mut self) -> VmResult<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .take(256)
            .position(|&b| b == b'\n')
            .ok_or_else(|| {
                format!(
                    "pickle is truncated or malformed: unterminated GLOBAL line at offset {}",
                    self.pos
                )
            })?;
        let s =
            std::str::from_utf8(&rest[..n]).map_err(|_| "GLOBAL name is not UTF-8".to_string())?;
        self.pos += n + 1;
        Ok(s)
    }

    fn alloc(&mut self, o: Obj) -> H {
        self.arena.push(o);
        self.arena.len() - 1
    }
    fn push(&mut self, o: Obj) {
        let h = self.alloc(o);
        self.stack.push(h);
    }
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }
    fn pop(&mut self) -> VmResult<H> {
        if self.stack.len() <= self.floor() {
            return Err("pickle stack underflow".into());
        }
        Ok(self.stack.pop().expect("checked"))
    }
    fn top(&self) -> VmResult<H> {
        if self.stack.len() <= self.floor() {
            return Err("pickle stack underflow".into());
        }
        Ok(*self.stack.last().expect("checked"))
    }
    fn pop_mark(&mut self) -> VmResult<Vec<H>> {
        let m = self.marks.pop().ok_or("pickle has no MARK to pop to")?;
        Ok(self.stack.split_off(m))
    }
    fn pop_n(&mut self, n: usize) -> VmResult<Vec<H>> {
        if self.stack.len() < self.floor() + n {
            return Err("pickle stack underflow".into());
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }
    fn str_of(&self, h: H) -> VmResult<&str> {
        match &self.arena[h] {
            Obj::Str(s) => Ok(s),
            o => Err(format!("expected a str, found {}", o.kind())),
        }
    }
    fn memo_get(&self, i: u32) -> VmResult<H> {
        self.memo
            .get(&i)
            .copied()
            .ok_or_else(|| format!("pickle reads memo slot {i}, which was never written"))
    }
    fn memo_put(&mut self, i: u32) -> VmResult<()> {
        let h = self.top()?;
        self.memo.insert(i, h);
        Ok(())
    }
    fn push_str(&mut self, b: &[u8]) -> VmResult<()> {
        let s = std::str::from_utf8(b).map_err(|_| "string is not UTF-8".to_string())?;
        self.push(Obj::Str(s.to_owned()));
        Ok(())
    }

    fn run(&mut self) -> VmResult<H> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            self.step(op)
                .map_err(|m| format!("pickle offset {at} (opcode 0x{op:02x}): {m}"))?;
            if op == b'.' {
                return self.pop();
            }
        }
    }

    fn step(&mut self, op: u8) -> VmResult<()> {
        match op {
            0x80 => {
                // PROTO
                let v = self.u8()?;
                if v > 5 {
                    return Err(format!("unsupported pickle protocol {v}"));
                }
            }
            0x95 => {
                // FRAME: a length hint only.
                self.take(8)?;
            }
            b'.' => {} // STOP, handled by run()
            b'(' => {
                if self.marks.len() >= MAX_MARK_DEPTH {
                    return Err(format!("more than {MAX_MARK_DEPTH} nested MARKs"));
                }
                self.marks.push(self.stack.len());
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let h = self.top()?;
                self.stack.push(h);
            }
            b'N' => self.push(Obj::None),
            0x88 => self.push(Obj::Bool),
            0x89 => self.push(Obj::Bool),
            b'J' => {
                let v = i32::from_le_bytes(self.arr()?);
                self.push(Obj::Int(v as i64));
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Obj::Int(v as i64));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.arr()?);
                self.push(Obj::Int(v as i64));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = self.u8()? as usize;
                let b = self.take(n)?;
                if n > 8 {
                    return Err(format!("integer of {n} bytes is too large"));
                }
                let mut v: i64 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                self.push(Obj::Int(v));
            }
            b'G' => {
                self.take(8)?;
                self.push(Obj::Float);
            }
            b'X' => {
                let n = u32::from_le_bytes(self.arr()?) as usize;
                let b = self.take(n)?;
                self.push_str(b)?;
            }
            0x8c => {
                let n = self.u8()? as usize;
                let b = self.take(n)?;
                self.push_str(b)?;
            }
            0x8d => {
                let n = u64::from_le_bytes(self.arr()?);
                let n = usize::try_from(n).map_err(|_| "string too long")?;
                let b = self.take(n)?;
                self.push_str(b)?;
            }
            b'T' | b'U' => {
                // BINSTRING / SHORT_BINSTRING (protocol 1 str): latin-1.
                let n = if op == b'T' {
                    let n = i32::from_le_bytes(self.arr()?);
                    usize::try_from(n).map_err(|_| "negative string length")?
                } else {
                    self.u8()? as usize
                };
                let b = self.take(n)?;
                self.push(Obj::Str(b.iter().map(|&c| c as char).collect()));
            }
            b'B' | b'C' => {
                let n = if op == b'B' {
                    u32::from_le_bytes(self.arr()?) as usize
                } else {
                    self.u8()? as usize
                };
                self.take(n)?;
                self.push(Obj::Bytes);
            }
            b'}' => self.push(Obj::Dict(Vec::new())),
            b']' => self.push(Obj::List(Vec::new())),
            b')' => self.push(Obj::Tuple(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.push(Obj::Tuple(items));
            }
            0x85..=0x87 => {
                let items = self.pop_n((op - 0x84) as usize)?;
                self.push(Obj::Tuple(items));
            }
            b'q' => {
                let i = self.u8()? as u32;
                self.memo_put(i)?;
            }
            b'r' => {
                let i = u32::from_le_bytes(self.arr()?);
                self.memo_put(i)?;
            }
            0x94 => {
                // MEMOIZE
                let i = u32::try_from(self.memo.len()).map_err(|_| "memo too large")?;
                self.memo_put(i)?;
            }
            b'h' => {
                let i = self.u8()? as u32;
                let h = self.memo_get(i)?;
                self.stack.push(h);
            }
            b'j' => {
                let i = u32::from_le_bytes(self.arr()?);
                let h = self.memo_get(i)?;
                self.stack.push(h);
            }
            b'a' => {
                let v = self.pop()?;
                let l = self.top()?;
                self.list_mut(l)?.push(v);
            }
            b'e' => {
                let items = self.pop_mark()?;
                let l = self.top()?;
                self.list_mut(l)?.extend(items);
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                let d = self.top()?;
                self.dict_mut(d)?.push((k, v));
            }
            b'u' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                let d = self.top()?;
                let pairs: Vec<(H, H)> = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                self.dict_mut(d)?.extend(pairs);
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = resolve_global(module, name)?;
                self.push(Obj::Global(g));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = self.pop()?;
                let module = self.pop()?;
                let g = resolve_global(self.str_of(module)?, self.str_of(name)?)?;
                self.push(Obj::Global(g));
            }
            b'Q' => {
                let pid = self.pop()?;
                let st = self.persistent_load(pid)?;
                self.push(st);
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let o = self.reduce(func, args)?;
                self.push(o);
            }
            b'b' => {
                // BUILD: the state of an OrderedDict (`_metadata` of a
                // state_dict) or of a tensor is dropped.
                let _state = self.pop()?;
                let obj = self.top()?;
                match &self.arena[obj] {
                    Obj::Dict(_) | Obj::Tensor { .. } => {}
                    o => return Err(format!("BUILD on a {}, which is not allowed", o.kind())),
                }
            }
            _ => {
                return Err(format!(
                    "unsupported pickle opcode 0x{op:02x} ({:?})",
                    op as char
                ));
            }
        }
        Ok(())
    }

    fn list_mut(&mut self, h: H) -> VmResult<&mut Vec<H>> {
        match &mut self.arena[h] {
            Obj::List(l) => Ok(l),
            o => Err(format!("APPEND to a {}", o.kind())),
        }
    }
    fn dict_mut(&mut self, h: H) -> VmResult<&mut Vec<(H, H)>> {
        match &mut self.arena[h] {
            Obj::Dict(d) => Ok(d),
            o => Err(format!("SETITEM on a {}", o.kind())),
        }
    }

    fn tuple(&self, h: H, what: &str) -> VmResult<&[H]> {
        match &self.arena[h] {
            Obj::Tuple(t) => Ok(t),
            o => Err(format!("{what} should be a tuple, found {}", o.kind())),
        }
    }
    fn uint(&self, h: H, what: &str) -> VmResult<usize> {
        match &self.arena[h] {
            Obj::Int(v) => usize::try_from(*v).map_err(|_| format!("{what} is negative ({v})")),
            o => Err(format!("{what} should be an int, found {}", o.kind())),
        }
    }
    fn uint_tuple(&self, h: H, what: &str) -> VmResult<Vec<usize>> {
        let t = self.tuple(h, what)?;
        if t.len() > MAX_NDIM {
            return Err(format!(
                "{what} has {} dimensions, more than {MAX_NDIM}",
                t.len()
            ));
        }
        t.iter().map(|&x| self.uint(x, what)).collect()
    }

    /// `('storage', torch.XStorage, key, location, numel)`.
    fn persistent_load(&self, pid: H) -> VmResult<Obj> {
        let t = self.tuple(pid, "persistent id")?;
        let [tag, class, key, _location, numel] = t else {
            return Err(format!("persistent id has {} fields, expected 5", t.len()));
        };
        if self.str_of(*tag)? != "storage" {
            return Err(format!(
                "persistent id of kind '{}', expected 'storage'",
                self.str_of(*tag)?
            ));
        }
        let dtype = match &self.arena[*class] {
            Obj::Global(Global::Storage(dt)) => *dt,
            o => {
                return Err(format!(
                    "persistent id names a {} instead of a torch storage class",
                    o.kind()
                ))
            }
        };
        let key_str = self.str_of(*key)?;
        if key_str.is_empty() || key_str.len() > 64 || key_str.contains(['/', '\\']) {
            return Err(format!("bad storage key '{}'", key_str.escape_debug()));
        }
        Ok(Obj::Storage {
            dtype,
            key: *key,
            numel: self.uint(*numel, "storage size")?,
        })
    }

    fn reduce(&self, func: H, args: H) -> VmResult<Obj> {
        let g = match &self.arena[func] {
            Obj::Global(g) => *g,
            o => {
                return Err(format!(
                    "REDUCE calls a {}, which is not callable here",
                    o.kind()
                ))
            }
        };
        let a = self.tuple(args, "REDUCE arguments")?;
        match g {
            Global::OrderedDict => {
                if !a.is_empty() {
                    return Err("OrderedDict(...) with arguments is not supported".into());
                }
                Ok(Obj::Dict(Vec::new()))
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                let ok = if g == Global::RebuildTensor {
                    a.len() == 4
                } else {
                    a.len() == 6 || a.len() == 7
                };
                if !ok {
                    return Err(format!("_rebuild_tensor called with {} arguments", a.len()));
                }
                if !matches!(self.arena[a[0]], Obj::Storage { .. }) {
                    return Err(format!("tensor storage is a {}", self.arena[a[0]].kind()));
                }
                let offset = self.uint(a[1], "storage offset")?;
                let size = self.uint_tuple(a[2], "tensor size")?;
                let stride = self.uint_tuple(a[3], "tensor stride")?;
                if size.len() != stride.len() {
                    return Err(format!(
                        "tensor size {size:?} and stride {stride:?} differ in length"
                    ));
                }
                Ok(Obj::Tensor {
                    storage: a[0],
                    offset,
                    size: a[2],
                    stride: a[3],
                })
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let n = if g == Global::RebuildParameter { 3 } else { 4 };
                if a.len() != n {
                    return Err(format!(
                        "_rebuild_parameter called with {} arguments",
                        a.len()
                    ));
                }
                match &self.arena[a[0]] {
                    t @ Obj::Tensor { .. } => Ok(t.clone()), // four words
                    o => Err(format!("parameter data is a {}", o.kind())),
                }
            }
            Global::Storage(_) => Err("calling a storage class is not supported".into()),
        }
    }
}

/// Run the pickle and list the tensors of its top-level dict, in order.
fn parse_state_dict(pickle: &[u8]) -> VmResult<Vec<TensorRef>> {
    let mut vm = Vm::new(pickle);
    let top = vm.run()?;
    let pairs = match &vm.arena[top] {
        Obj::Dict(d) => d,
        o => {
            return Err(format!(
                "top-level object is a {}, not a dict of tensors",
                o.kind()
            ))
        }
    };
    // Python dict semantics: a repeated key keeps its first position and its
    // last value.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut entries: Vec<(&str, H)> = Vec::new();
    for &(k, v) in pairs {
        let name = match &vm.arena[k] {
            Obj::Str(s) => s.as_str(),
            o => {
                return Err(format!(
                    "top-level dict has a {} key; expected tensor names",
                    o.kind()
                ))
            }
        };
        match index.get(name) {
            Some(&i) => entries[i].1 = v,
            None => {
                index.insert(name, entries.len());
                entries.push((name, v));
            }
        }
    }
    let mut out = Vec::new();
    let mut nested = Vec::new();
    for (name, v) in entries {
        match &vm.arena[v] {
            &Obj::Tensor {
                storage,
                offset,
                size,
                stride,
            } => {
                let Obj::Storage { dtype, key, numel } = vm.arena[storage] else {
                    return Err("tensor storage is not a storage".into()); // checked at REDUCE
                };
                out.push(TensorRef {
                    name: name.to_owned(),
                    storage: StorageRef {
                        dtype,
                        key: vm.str_of(key)?.to_owned(),
                        numel,
                    },
                    offset,
                    // Tuples are immutable, so these were validated at REDUCE.
                    size: vm.uint_tuple(size, "tensor size")?,
                    stride: vm.uint_tuple(stride, "tensor stride")?,
                })
            }
            Obj::Dict(_) => nested.push(name),
            _ => {}
        }
    }
    if out.is_empty() && !pairs.is_empty() {
        let hint = if nested.is_empty() {
            String::new()
        } else {
            format!(
                " (it nests dicts under {}: a training checkpoint rather than a state dict?)",
                nested
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(format!("top-level dict holds no tensors{hint}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
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
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
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
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
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
        assert!(
            parse_state_dict(b"\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.").is_err()
        );
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
}
