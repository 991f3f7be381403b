//! Tensor descriptions (storage, offset, size, stride) and copying a
//! tensor's elements out of its storage bytes, every index checked.

use super::{PtDType, MAX_EXPANDED_BYTES};

#[derive(Debug, Clone, PartialEq)]
pub(in crate::weights) struct StorageRef {
    pub(in crate::weights) dtype: PtDType,
    pub(in crate::weights) key: String,
    pub(in crate::weights) numel: usize,
    /// Legacy format only: the tensor's storage is this slice of storage `key`.
    pub(in crate::weights) view: Option<StorageView>,
}

/// A slice of a root storage, in elements (legacy format, from torch versions
/// that had storage views); torch keeps the first slice made under each `key`.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::weights) struct StorageView {
    pub(in crate::weights) key: String,
    pub(in crate::weights) offset: usize,
    pub(in crate::weights) numel: usize,
}

/// A tensor as the pickle describes it, before its bytes are read.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::weights) struct TensorRef {
    pub(in crate::weights) name: String,
    pub(in crate::weights) storage: StorageRef,
    pub(in crate::weights) offset: usize,
    pub(in crate::weights) size: Vec<usize>,
    pub(in crate::weights) stride: Vec<usize>,
}

pub(super) fn numel_of(size: &[usize]) -> Option<usize> {
    size.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Whether the strides are row-major contiguous (dims of extent 1 ignored).
pub(super) fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&d, &s) in size.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d);
    }
    true
}

pub(super) fn is_whole_storage(r: &TensorRef, storage_numel: usize) -> bool {
    r.offset == 0 && numel_of(&r.size) == Some(storage_numel) && is_contiguous(&r.size, &r.stride)
}

/// Copy the elements of the view (offset, size, stride) of `src` into a
/// contiguous row-major buffer. Every index is checked against `src`.
pub(in crate::weights) fn gather(
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
