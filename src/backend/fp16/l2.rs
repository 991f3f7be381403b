//! ALBERT's shared layer kept in L2: a persisting access-policy window over
//! the weights of the blocks the schedule runs more than once (about 14 MB
//! fp16 for albert-base, read 12 times per forward), switched by
//! `bertrt bench --l2-persist on|off`.

use super::{DevPtr, Fp16Model, Seam};
use crate::error::Result;
use crate::model::{LayerNorm, Linear};

/// (address, bytes) of every fp16 tensor of a linear and a LayerNorm of `width`.
fn tensors(l: &Linear<DevPtr>, out: &mut Vec<(DevPtr, usize)>) {
    out.push((l.w, l.in_dim * l.out_dim * 2));
    out.push((l.b, l.out_dim * 2));
}

fn ln_tensors(ln: &LayerNorm<DevPtr>, width: usize, out: &mut Vec<(DevPtr, usize)>) {
    out.push((ln.gamma, width * 2));
    out.push((ln.beta, width * 2));
}

impl<S: Seam> Fp16Model<S> {
    /// The address range covering every tensor of the blocks the schedule
    /// runs more than once, or None when the model shares no layer. The
    /// tensors are separate allocations made one after another, so the range
    /// may also hold whatever the allocator put between them; its size says.
    pub fn shared_layer_window(&self) -> Option<(DevPtr, usize)> {
        let h = self.w.config.hidden_size;
        let runs = |idx: usize, of: fn(&(usize, usize)) -> usize| {
            self.w.schedule.iter().filter(|s| of(s) == idx).count()
        };
        let mut t = Vec::new();
        for (i, a) in self.w.attention.iter().enumerate() {
            if runs(i, |s| s.0) > 1 {
                tensors(&a.qkv, &mut t);
                tensors(&a.out, &mut t);
                ln_tensors(&a.ln, h, &mut t);
            }
        }
        for (i, f) in self.w.ffn.iter().enumerate() {
            if runs(i, |s| s.1) > 1 {
                tensors(&f.up, &mut t);
                tensors(&f.down, &mut t);
                ln_tensors(&f.ln, h, &mut t);
            }
        }
        let t: Vec<_> = t.into_iter().filter(|&(p, n)| p != 0 && n > 0).collect();
        let start = t.iter().map(|&(p, _)| p).min()?;
        let end = t.iter().map(|&(p, n)| p + n as u64).max()?;
        Some((start, (end - start) as usize))
    }

    /// Turns the persisting-L2 window over the shared layers on or off;
    /// what was done, in words. A model that shares no layer is left as is.
    pub fn set_l2_persist(&self, on: bool) -> Result<String> {
        match (on, self.shared_layer_window()) {
            (true, None) => Ok("L2 persistence: off (the model shares no layers)".into()),
            (true, Some(w)) => self.seam.l2_persist(Some(w)),
            (false, _) => self.seam.l2_persist(None),
        }
    }
}
