//! The CPU backend's one module with `unsafe`: calls into native code (the
//! `gemm` crate's SIMD matrix multiply, libm's `erff`) behind safe wrappers.
//! Every strided view is checked to lie inside its slice before a raw pointer
//! is made from it, so no caller can read or write out of bounds.
#![allow(unsafe_code)]

/// A read-only strided matrix inside a slice: element (i, j) is
/// `data[offset + i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A dense row-major `[rows, cols]` matrix: the whole of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View {
            data,
            offset: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Element (i, j) (bounds-checked).
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[self.offset + i * self.row_stride + j * self.col_stride]
    }

    /// Row `i`'s columns `j0..j0 + dst.len()` into `dst` (bounds-checked):
    /// a copy where columns are adjacent, else one strided walk.
    pub fn row_into(&self, i: usize, j0: usize, dst: &mut [f32]) {
        let start = self.offset + i * self.row_stride + j0 * self.col_stride;
        if self.col_stride == 1 {
            dst.copy_from_slice(&self.data[start..][..dst.len()]);
        } else {
            let src = self.data[start..].iter().step_by(self.col_stride);
            let mut filled = 0;
            for (d, v) in dst.iter_mut().zip(src) {
                *d = *v;
                filled += 1;
            }
            assert_eq!(filled, dst.len(), "row_into: row {i} ends outside the data");
        }
    }

    /// The same elements read as the transpose.
    pub fn t(self) -> View<'a> {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Panics unless every element lies inside `data` (strides are unsigned,
    /// so the last element is the furthest).
    fn assert_inside(&self, what: &str) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|r| r.checked_add((self.cols - 1).checked_mul(self.col_stride)?))
            .and_then(|r| r.checked_add(self.offset));
        assert!(
            last.is_some_and(|l| l < self.data.len()),
            "matmul {what}: a [{}, {}] view at offset {} (strides {}, {}) does not fit in {} values",
            self.rows,
            self.cols,
            self.offset,
            self.row_stride,
            self.col_stride,
            self.data.len()
        );
    }

    fn ptr(&self) -> *const f32 {
        self.data[self.offset..].as_ptr()
    }
}

/// `dst[m, n]` (dense row-major, overwritten) `= scale * a[m, k] · b[k, n]`,
/// on rayon's threads when `parallel`.
pub fn matmul(dst: &mut [f32], a: View, b: View, scale: f32, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(
        b.rows, k,
        "matmul: a is [{m}, {k}] but b has {} rows",
        b.rows
    );
    assert_eq!(
        dst.len(),
        m * n,
        "matmul: dst has {} values for [{m}, {n}]",
        dst.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(0.0);
        return;
    }
    a.assert_inside("a");
    b.assert_inside("b");
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: a and b lie inside their slices (assert_inside above, m, n, k > 0);
    // dst is a dense [m, n] slice we borrow mutably (length asserted), so it
    // aliases neither input. read_dst is false, so dst's old values are unused.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            0.0f32,
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

/// erf in f32 from the C library (glibc's erff: <= 1 ulp).
pub fn erff(x: f32) -> f32 {
    extern "C" {
        fn erff(x: f32) -> f32;
    }
    // SAFETY: erff is a pure libm function of one float (no pointers, no
    // global state), linked by std on every platform we build for.
    unsafe { erff(x) }
}
