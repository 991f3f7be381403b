//! 4-byte values stored from the start of a 64-byte cache line. malloc
//! promises only 16 bytes, and a large block starts 16 bytes past its
//! page: then every 64-byte row of an AMX tile, or of a packed panel,
//! straddles two lines. A tile block with its operands in L1 ran 312-347
//! GFLOP/s from such storage, 396-499 from whole lines (docs/perf/cpu.md).

use std::ops::{Deref, DerefMut};

/// u32 values in one 64-byte line.
const PER_LINE: usize = 16;

/// One cache line of values.
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([u32; PER_LINE]);

/// `len` u32 (or f32, through [`Lines::cast`]) on whole lines.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    lines: Vec<Line>,
    len: usize,
}

impl Lines {
    pub fn zeroed(len: usize) -> Lines {
        let mut l = Lines::default();
        l.resize(len);
        l
    }

    /// Sets the length; values past the old length read as zero.
    pub fn resize(&mut self, len: usize) {
        if len > self.len {
            // New lines come zeroed; only values kept from before (past
            // the old length, up to the old capacity) need clearing.
            let (old, kept) = (self.len, self.lines.len() * PER_LINE);
            self.lines.resize(
                self.lines.len().max(len.div_ceil(PER_LINE)),
                Line([0; PER_LINE]),
            );
            self.len = len;
            self[old..len.min(kept)].fill(0);
        } else {
            self.len = len;
        }
    }

    /// The values as another 4-byte type.
    pub fn cast<T: bytemuck::Pod>(&self) -> &[T] {
        bytemuck::cast_slice(&self[..])
    }

    pub fn cast_mut<T: bytemuck::Pod>(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(&mut self[..])
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.lines.as_slice())
    }
}

impl Deref for Lines {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &bytemuck::cast_slice::<Line, u32>(&self.lines)[..self.len]
    }
}

impl DerefMut for Lines {
    fn deref_mut(&mut self) -> &mut [u32] {
        &mut bytemuck::cast_slice_mut::<Line, u32>(&mut self.lines)[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_on_a_line_and_grow_with_zeros() {
        let mut l = Lines::zeroed(5);
        assert!((l.as_ptr() as usize).is_multiple_of(64));
        l.copy_from_slice(&[1, 2, 3, 4, 5]);
        l.resize(3);
        l.resize(40);
        assert_eq!(&l[..5], &[1, 2, 3, 0, 0]);
        assert!(l[5..].iter().all(|&v| v == 0));
        assert_eq!(l.len(), 40);
        assert!((l.as_ptr() as usize).is_multiple_of(64));
        assert_eq!(l.cast::<f32>()[0], f32::from_bits(1));
        // Shrunk and grown again inside the storage it has.
        l.fill(7);
        l.resize(2);
        l.resize(30);
        assert_eq!(&l[..3], &[7, 7, 0]);
        assert!(l[2..].iter().all(|&v| v == 0));
        // Many sizes, small and past malloc's mmap threshold: 16-byte
        // storage would start on a line about one time in four.
        let all: Vec<Lines> = (1..40).map(|i| Lines::zeroed(i * i * 97)).collect();
        assert!(all.iter().all(|l| (l.as_ptr() as usize).is_multiple_of(64)));
    }
}
