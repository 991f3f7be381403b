//! The activation buffers of one encoder forward, kept for the next. Fresh
//! buffers cost a page fault and a zeroing pass per page on every forward
//! (2 MiB at a time on huge pages): about 5% of the samples of the MiniLM
//! job (1,000 sentences) went to clearing pages before this.

use super::huge_pages::Floats;
use super::packed::ATiles;
use std::sync::Mutex;

/// Every buffer a forward writes besides its output. Contents are
/// unspecified between forwards: each is sized and overwritten before it is
/// read ([`Floats::ensure`], [`ATiles`]' fills).
#[derive(Default)]
pub struct Workspace {
    /// f32 Q, K and V `[tokens, 3H]` (off the AMX attention path).
    pub qkv: Floats,
    /// The attention context `[tokens, H]`.
    pub ctx: Floats,
    /// The attention block's output `[tokens, H]`.
    pub y: Floats,
    /// The FFN's intermediate `[tokens, I]` (off the AMX FFN path).
    pub u: Floats,
    /// AMX A tiles: a linear's input, the FFN's GELU output, the layer
    /// input and the attention block's output.
    pub a_in: ATiles,
    pub a_mid: ATiles,
    pub a_x: ATiles,
    pub a_y: ATiles,
    /// bf16 Q, K and V by rows, the AMX attention's input.
    pub qkv_pairs: Vec<u32>,
}

/// Workspaces not in use. A forward takes one (a new one when all are
/// taken, so concurrent forwards never wait for each other) and returns it,
/// so there are as many as the most forwards ever run at once.
#[derive(Default)]
pub struct Spare(Mutex<Vec<Workspace>>);

impl Spare {
    /// `f` on a workspace of its own.
    pub fn with<R>(&self, f: impl FnOnce(&mut Workspace) -> R) -> R {
        // A poisoned lock only means a forward panicked while pushing or
        // popping; the list itself is still whole.
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut ws = taken.unwrap_or_default();
        let r = f(&mut ws);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(ws);
        r
    }

    /// Workspaces kept (for the tests).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_workspace_is_the_next_one_taken() {
        let spare = Spare::default();
        let first = spare.with(|ws| ws.y.ensure(1000).as_ptr() as usize);
        // Sizing to no more than before keeps the storage: the same buffer.
        let again = spare.with(|ws| ws.y.ensure(800).as_ptr() as usize);
        assert_eq!(first, again);
        assert_eq!(spare.kept(), 1);
        // A forward inside another takes a second workspace, not the first.
        let (outer, inner) = spare.with(|ws| {
            let outer = ws.y.ensure(10).as_ptr() as usize;
            let inner = spare.with(|ws2| ws2.y.ensure(10).as_ptr() as usize);
            (outer, inner)
        });
        assert_ne!(outer, inner);
        assert_eq!(spare.kept(), 2);
    }
}
