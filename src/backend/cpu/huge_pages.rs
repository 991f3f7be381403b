//! Activation buffers on transparent huge pages. A linear's output rows are
//! `4 * n` bytes apart (up to 12 KiB), so each 14-row register tile stores
//! into 14 different 4 KiB pages, and a task's tiles walk through more pages
//! than the first-level TLB holds. On 2 MiB pages the MiniLM QKV and FFN-up
//! linears ran 12-13% faster, BERT-base's 5-6% (paired timings,
//! docs/perf/cpu.md). Linux gives anonymous memory huge pages only where
//! asked (`madvise` mode, this workplace's default), hence the advice.

use memmap2::{Advice, MmapMut, MmapOptions};

/// Huge pages are 2 MiB on x86-64; a smaller buffer gains nothing.
const HUGE_PAGE: usize = 2 << 20;

/// Growable f32 storage, on huge pages where the kernel grants them, else
/// on ordinary ones. Contents are unspecified after [`Floats::ensure`]
/// grows it: the callers overwrite every value they read.
#[derive(Default)]
pub struct Floats {
    map: Option<MmapMut>,
    /// Where the huge-page-aligned part of `map` starts.
    skip: usize,
    fallback: Vec<f32>,
    len: usize,
}

impl Floats {
    /// The first `len` values, growing the storage when it is shorter.
    pub fn ensure(&mut self, len: usize) -> &mut [f32] {
        if len > self.capacity() {
            self.grow(len);
        }
        self.len = len;
        self.as_mut_slice()
    }

    fn capacity(&self) -> usize {
        match &self.map {
            Some(m) => (m.len() - self.skip) / 4,
            None => self.fallback.len(),
        }
    }

    fn grow(&mut self, len: usize) {
        let bytes = len * 4;
        self.map = None;
        if bytes >= HUGE_PAGE {
            // One huge page extra, so the buffer can start on a boundary.
            let map = MmapOptions::new()
                .len(bytes + HUGE_PAGE)
                .map_anon()
                .ok()
                // Advisory: without huge pages the buffer still works.
                .inspect(|m| drop(m.advise(Advice::HugePage)));
            if let Some(map) = map {
                self.skip = to_boundary(map.as_ptr() as usize);
                self.map = Some(map);
                self.fallback = Vec::new();
                return;
            }
        }
        self.fallback.resize(len, 0.0);
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        let len = self.len;
        match &mut self.map {
            Some(m) => bytemuck::cast_slice_mut(&mut m[self.skip..self.skip + len * 4]),
            None => &mut self.fallback[..len],
        }
    }
}

/// Bytes from `addr` to the next huge-page boundary (0 on one).
fn to_boundary(addr: usize) -> usize {
    (HUGE_PAGE - addr % HUGE_PAGE) % HUGE_PAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_buffers_hold_what_is_written() {
        let mut f = Floats::default();
        for len in [0, 5, HUGE_PAGE / 4 + 3, 10, 3 * HUGE_PAGE / 4] {
            let s = f.ensure(len);
            assert_eq!(s.len(), len);
            for (i, v) in s.iter_mut().enumerate() {
                *v = i as f32;
            }
            // Sizing to the same length again keeps the storage.
            let again = f.ensure(len);
            assert!(again.iter().enumerate().all(|(i, &v)| v == i as f32));
        }
        // Large buffers start on a huge-page boundary.
        let at = f.ensure(HUGE_PAGE).as_ptr() as usize;
        assert_eq!(at % HUGE_PAGE, 0);
    }

    #[test]
    fn buffers_skip_to_the_next_huge_page_boundary() {
        // This kernel already aligns large anonymous maps, so the skip is
        // checked on addresses that are not aligned.
        let base = 7 * HUGE_PAGE;
        assert_eq!(to_boundary(base), 0);
        assert_eq!(to_boundary(base + 4096), HUGE_PAGE - 4096);
        assert_eq!(to_boundary(base + HUGE_PAGE - 1), 1);
    }
}
