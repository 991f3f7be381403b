//! What torch's pickles mean: the whitelisted globals, persistent ids
//! naming storages (zip and legacy forms), `_rebuild_tensor*` and
//! `_rebuild_parameter*` as REDUCE, and the state dict's tensors.

use std::collections::HashMap;

use super::gather::{StorageRef, StorageView, TensorRef};
use super::vm::{Container, Obj, Vm, VmResult, H};
use super::PtDType;

/// The only callables a pickle may name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::weights) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(PtDType),
}

pub(super) fn resolve_global(module: &str, name: &str) -> std::result::Result<Global, String> {
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

impl Vm<'_> {
    /// Every storage the pickle's persistent ids named, in pickle order.
    pub(in crate::weights) fn storages(&self) -> VmResult<Vec<StorageRef>> {
        (0..self.arena.len())
            .filter(|&h| matches!(self.arena[h], Obj::Storage { .. }))
            .map(|h| self.storage_ref(h))
            .collect()
    }
    fn storage_ref(&self, h: H) -> VmResult<StorageRef> {
        let Obj::Storage {
            dtype,
            key,
            numel,
            view,
        } = self.arena[h]
        else {
            return Err(format!(
                "expected a storage, found {}",
                self.arena[h].kind()
            ));
        };
        let view = match view {
            Some((key, offset, numel)) => Some(StorageView {
                key: self.str_of(key)?.to_owned(),
                offset,
                numel,
            }),
            None => None,
        };
        Ok(StorageRef {
            dtype,
            key: self.str_of(key)?.to_owned(),
            numel,
            view,
        })
    }

    /// `('storage', torch.XStorage, key, location, numel)`, plus
    /// `view_metadata` in the legacy format.
    pub(super) fn persistent_load(&self, pid: H) -> VmResult<Obj> {
        let t = self.tuple(pid, "persistent id")?;
        let expected = match self.container {
            Container::Zip => 5,
            Container::Legacy => 6,
        };
        if let Some(&tag) = t.first() {
            match self.str_of(tag)? {
                "storage" => {}
                "module" => {
                    return Err("the file pickles a whole nn.Module (torch.save(model)), \
                                which needs its Python code; save model.state_dict() instead"
                        .into())
                }
                other => {
                    return Err(format!(
                        "persistent id of kind '{}', expected 'storage'",
                        other.escape_debug()
                    ))
                }
            }
        }
        if t.len() != expected {
            return Err(format!(
                "persistent id has {} fields, expected {expected}",
                t.len()
            ));
        }
        let (class, key, numel) = (&t[1], &t[2], &t[4]);
        let dtype = match &self.arena[*class] {
            Obj::Global(Global::Storage(dt)) => *dt,
            o => {
                return Err(format!(
                    "persistent id names a {} instead of a torch storage class",
                    o.kind()
                ))
            }
        };
        let view = match t.get(5).map(|&h| &self.arena[h]) {
            None | Some(Obj::None) => None,
            Some(Obj::Tuple(v)) => {
                let [view_key, offset, view_numel] = v.as_slice() else {
                    return Err(format!("storage view has {} fields, expected 3", v.len()));
                };
                self.check_key(*view_key)?;
                Some((
                    *view_key,
                    self.uint(*offset, "storage view offset")?,
                    self.uint(*view_numel, "storage view size")?,
                ))
            }
            Some(o) => return Err(format!("storage view is a {}, not a tuple", o.kind())),
        };
        self.check_key(*key)?;
        Ok(Obj::Storage {
            dtype,
            key: *key,
            numel: self.uint(*numel, "storage size")?,
            view,
        })
    }

    fn check_key(&self, key: H) -> VmResult<()> {
        let key_str = self.str_of(key)?;
        if key_str.is_empty() || key_str.len() > 64 || key_str.contains(['/', '\\']) {
            return Err(format!("bad storage key '{}'", key_str.escape_debug()));
        }
        Ok(())
    }

    pub(super) fn reduce(&self, func: H, args: H) -> VmResult<Obj> {
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
pub(super) fn parse_state_dict(pickle: &[u8]) -> VmResult<Vec<TensorRef>> {
    let mut vm = Vm::new(pickle, Container::Zip);
    let top = vm.run()?;
    state_dict_tensors(&vm, top)
}

/// The tensors of the state dict `top`, in dict order.
pub(in crate::weights) fn state_dict_tensors(vm: &Vm, top: H) -> VmResult<Vec<TensorRef>> {
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
                out.push(TensorRef {
                    name: name.to_owned(),
                    // Checked to be a storage at REDUCE.
                    storage: vm.storage_ref(storage)?,
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
