//! Reading weights from HF model folders: `model.safetensors` (memory-mapped),
//! sharded `model.safetensors.index.json`, `pytorch_model.bin` (either
//! `torch.save` format) or sharded `pytorch_model.bin.index.json`.
//!
//! The store hands out f32 copies of named tensors after checking their shape;
//! it records which names were used so unexpected extras can be reported.

pub mod names;
pub mod pickle;
pub mod torch_legacy;

use crate::error::{Error, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// Anything we do not read as weights (integers, f64, bool...).
    Other(&'static str),
}

/// How a weights file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WeightFormat {
    Safetensors,
    /// `torch.save`'s zip format (torch >= 1.6).
    TorchZip,
    /// `torch.save`'s legacy format (torch < 1.6, or
    /// `_use_new_zipfile_serialization=False`).
    TorchLegacy,
}

impl WeightFormat {
    pub fn describe(self) -> &'static str {
        match self {
            WeightFormat::Safetensors => "safetensors",
            WeightFormat::TorchZip => "pytorch .bin (torch.save zip format)",
            WeightFormat::TorchLegacy => "pytorch .bin (legacy torch.save format, torch < 1.6)",
        }
    }
}

enum Bytes {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        end: usize,
    },
    Owned(Vec<u8>),
}

struct Stored {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Bytes,
    file: PathBuf,
}

impl Stored {
    fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped { map, start, end } => &map[*start..*end],
            Bytes::Owned(v) => v,
        }
    }
}

/// All tensors of one model folder, by their names in the files.
pub struct WeightStore {
    tensors: HashMap<String, Stored>,
    used: Mutex<std::collections::HashSet<String>>,
    /// The weights file (or index) this store was read from, for messages.
    pub source: PathBuf,
    /// The files read (one, or each shard) and the format of each.
    pub files: Vec<(PathBuf, WeightFormat)>,
}

impl WeightStore {
    /// Finds and opens the weights in a model folder, in transformers' order
    /// of preference: safetensors first, then PyTorch `.bin`.
    pub fn open_dir(dir: &Path) -> Result<WeightStore> {
        let st = dir.join("model.safetensors");
        let idx = dir.join("model.safetensors.index.json");
        let bin = dir.join("pytorch_model.bin");
        let bin_idx = dir.join("pytorch_model.bin.index.json");
        if st.is_file() {
            Self::open_safetensors(std::slice::from_ref(&st), st.clone())
        } else if idx.is_file() {
            let files = shard_files(&idx)?;
            Self::open_safetensors(&files, idx)
        } else if bin.is_file() {
            Self::open_pytorch_bin(std::slice::from_ref(&bin), bin.clone())
        } else if bin_idx.is_file() {
            let files = shard_files(&bin_idx)?;
            Self::open_pytorch_bin(&files, bin_idx)
        } else {
            Err(no_weights_error(dir))
        }
    }

    /// Which format(s) the files were in, e.g. for `info`.
    pub fn format_description(&self) -> String {
        let mut formats: Vec<WeightFormat> = self.files.iter().map(|f| f.1).collect();
        formats.sort();
        formats.dedup();
        let names: Vec<&str> = formats.iter().map(|f| f.describe()).collect();
        names.join(" + ")
    }

    fn open_safetensors(files: &[PathBuf], source: PathBuf) -> Result<WeightStore> {
        let mut tensors = HashMap::new();
        for file in files {
            let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
            let map = Arc::new(map_file(&f).map_err(|e| Error::io(file, e))?);
            let st = safetensors::SafeTensors::deserialize(&map[..])
                .map_err(|e| Error::weights(file, format!("not a valid safetensors file: {e}")))?;
            let base = map.as_ptr() as usize;
            for (name, view) in st.tensors() {
                let data = view.data();
                let start = data.as_ptr() as usize - base;
                let dtype = match view.dtype() {
                    safetensors::Dtype::F32 => DType::F32,
                    safetensors::Dtype::F16 => DType::F16,
                    safetensors::Dtype::BF16 => DType::BF16,
                    safetensors::Dtype::I64 => DType::Other("int64"),
                    safetensors::Dtype::I32 => DType::Other("int32"),
                    safetensors::Dtype::F64 => DType::Other("float64"),
                    _ => DType::Other("unsupported dtype"),
                };
                tensors.insert(
                    name,
                    Stored {
                        dtype,
                        shape: view.shape().to_vec(),
                        bytes: Bytes::Mapped {
                            map: map.clone(),
                            start,
                            end: start + data.len(),
                        },
                        file: file.clone(),
                    },
                );
            }
        }
        Ok(WeightStore {
            tensors,
            used: Default::default(),
            source,
            files: files
                .iter()
                .map(|f| (f.clone(), WeightFormat::Safetensors))
                .collect(),
        })
    }

    fn open_pytorch_bin(files: &[PathBuf], source: PathBuf) -> Result<WeightStore> {
        let mut tensors = HashMap::new();
        let mut read = Vec::new();
        for path in files {
            let (format, pickled) = read_torch_bin(path)?;
            read.push((path.clone(), format));
            for t in pickled {
                use pickle::PtDType as P;
                let dtype = match t.dtype {
                    P::F32 => DType::F32,
                    P::F16 => DType::F16,
                    P::BF16 => DType::BF16,
                    P::I64 => DType::Other("int64"),
                    _ => DType::Other("unsupported dtype"),
                };
                tensors.insert(
                    t.name,
                    Stored {
                        dtype,
                        shape: t.shape,
                        bytes: Bytes::Owned(t.data),
                        file: path.clone(),
                    },
                );
            }
        }
        Ok(WeightStore {
            tensors,
            used: Default::default(),
            source,
            files: read,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// The first of `candidates` present in the files.
    pub fn find<'a>(&self, candidates: &'a [String]) -> Option<&'a str> {
        candidates
            .iter()
            .find(|n| self.tensors.contains_key(n.as_str()))
            .map(|s| s.as_str())
    }

    /// Marks a tensor as deliberately ignored (buffers such as position_ids).
    pub fn skip(&self, name: &str) {
        self.used.lock().unwrap().insert(name.to_string());
    }

    /// Reads `name` as f32, checking that its shape is `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.tensors.get(name).ok_or_else(|| {
            Error::tensor(
                name,
                format!(
                    "missing from {} (expected shape {shape:?})",
                    self.source.display()
                ),
            )
        })?;
        if t.shape != shape {
            return Err(Error::tensor(
                name,
                format!(
                    "shape {:?} in {}, but the config implies {shape:?}",
                    t.shape,
                    t.file.display()
                ),
            ));
        }
        let data = t.data();
        let n: usize = shape.iter().product();
        let out: Vec<f32> = match t.dtype {
            DType::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            DType::F16 => data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => data
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::Other(d) => {
                return Err(Error::tensor(
                    name,
                    format!(
                        "dtype {d} in {}; weights must be f32, f16 or bf16",
                        t.file.display()
                    ),
                ))
            }
        };
        if out.len() != n {
            return Err(Error::tensor(
                name,
                format!("holds {} values for shape {shape:?}", out.len()),
            ));
        }
        if let Bytes::Mapped { map, start, end } = &t.bytes {
            release_pages(map, *start, *end);
        }
        self.used.lock().unwrap().insert(name.to_string());
        Ok(out)
    }

    /// Shape of a stored tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// Names present in the files but never read: reported as warnings.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().unwrap();
        let mut v: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The dtype most weights are stored in.
    pub fn main_dtype(&self) -> Option<DType> {
        let mut count: BTreeMap<&'static str, (usize, DType)> = BTreeMap::new();
        for t in self.tensors.values() {
            let key = match t.dtype {
                DType::F32 => "f32",
                DType::F16 => "f16",
                DType::BF16 => "bf16",
                DType::Other(_) => continue,
            };
            count.entry(key).or_insert((0, t.dtype)).0 += t.shape.iter().product::<usize>();
        }
        count.values().max_by_key(|c| c.0).map(|c| c.1)
    }
}

/// Drops the mapped file pages of bytes `start..end` from this process's
/// resident set once they are copied out, so loading does not hold the file
/// and its f32 copy at once (peak RSS about one copy, not two). Advisory:
/// an error only leaves the pages resident.
#[allow(unsafe_code)]
fn release_pages(map: &Mmap, start: usize, end: usize) {
    #[cfg(unix)]
    // SAFETY: the mapping is a read-only file mapping, and no slice of this
    // range is alive (the copy above has ended): MADV_DONTNEED only unmaps
    // the pages, and a later read faults them in again from the file.
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
    };
}

#[allow(unsafe_code)]
fn map_file(f: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only; a concurrent writer to a model file
    // would be a user error we cannot prevent, as with any mmap reader.
    unsafe { Mmap::map(f) }
}

/// Reads a `torch.save` file in whichever of its two formats it is.
fn read_torch_bin(path: &Path) -> Result<(WeightFormat, Vec<pickle::PickledTensor>)> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::weights(path, "file is empty"));
    }
    let map = map_file(&f).map_err(|e| Error::io(path, e))?;
    // torch.load tells the formats apart the same way: a zip or not.
    if map.starts_with(b"PK\x03\x04") {
        let tensors = pickle::read_pytorch_bin_from(std::io::Cursor::new(&map[..]), path)?;
        Ok((WeightFormat::TorchZip, tensors))
    } else {
        let tensors = torch_legacy::read_legacy_bytes(&map, path)?;
        Ok((WeightFormat::TorchLegacy, tensors))
    }
}

/// Weight files of other frameworks: (file, framework, `from_pretrained` flag).
const FOREIGN_WEIGHTS: &[(&str, &str, &str)] = &[
    ("tf_model.h5", "TensorFlow", "from_tf"),
    ("tf_model.h5.index.json", "TensorFlow", "from_tf"),
    ("flax_model.msgpack", "Flax", "from_flax"),
    ("flax_model.msgpack.index.json", "Flax", "from_flax"),
];

/// When `has` finds only TensorFlow or Flax weights: that file, and what to
/// say: transformers converts them by loading `load_from` as `class` and
/// saving to `save_to`.
pub fn foreign_weights_advice(
    has: impl Fn(&str) -> bool,
    class: &str,
    load_from: &str,
    save_to: &str,
) -> Option<(&'static str, String)> {
    let &(file, framework, flag) = FOREIGN_WEIGHTS.iter().find(|f| has(f.0))?;
    let quote = |s: &str| s.replace('\\', "\\\\").replace('\'', "\\'");
    let (load_from, save_to) = (quote(load_from), quote(save_to));
    Some((
        file,
        format!(
            "only {framework} weights ({file}); bertrt reads safetensors and PyTorch .bin \
             files. Convert them once with transformers ({framework} installed): \
             python -c \"from transformers import {class}; \
             {class}.from_pretrained('{load_from}', {flag}=True).save_pretrained('{save_to}')\""
        ),
    ))
}

/// Says what a folder without weights we can read holds instead.
fn no_weights_error(dir: &Path) -> Error {
    // The task class keeps the head; config.json names it.
    let class = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|c| c["architectures"][0].as_str().map(str::to_owned))
        .filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'))
        .unwrap_or_else(|| "AutoModel".to_string());
    let d = dir.display().to_string();
    match foreign_weights_advice(|f| dir.join(f).is_file(), &class, &d, &d) {
        Some((file, advice)) => Error::weights(
            dir.join(file),
            format!("the folder holds {advice} (this adds model.safetensors to the folder)"),
        ),
        None => Error::weights(
            dir,
            "no weights found: expected model.safetensors, model.safetensors.index.json, \
             pytorch_model.bin or pytorch_model.bin.index.json",
        ),
    }
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::weights(index, format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::weights(index, "no 'weight_map' object"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for f in map.values() {
        let f = f
            .as_str()
            .ok_or_else(|| Error::weights(index, "weight_map values must be file names"))?;
        let p = dir.join(f);
        if !files.contains(&p) {
            if !p.is_file() {
                return Err(Error::weights(
                    index,
                    format!("shard '{f}' listed but missing"),
                ));
            }
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}
