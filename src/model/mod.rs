//! The model as weights laid out for the packed forward pass, independent of
//! the backend ([`types`]: generic over storage): the CPU engine runs the
//! host f32 model directly, the fp16 backend maps it to device pointers once.
//!
//! Layers are split into attention and FFN blocks and the encoder is a
//! schedule of (attention block, FFN block) pairs, so ALBERT's cross-layer
//! sharing (all, attention-only, FFN-only) is just repeated indices.

mod build;
mod load;
mod random;
mod types;

pub use build::{EncoderLinear, LinearHook};
pub use load::{load_weights, read_dir, read_dir_with, WeightFiles};
pub use random::{random_weights, random_weights_with};
pub use types::*;

use crate::config::ModelConfig;

impl ModelWeights {
    /// [`Self::parameter_count`] as if every layer had its own blocks (what
    /// ALBERT's sharing saves is the difference).
    pub fn parameter_count_unshared(&self) -> usize {
        let lin = |l: &Linear| l.in_dim * l.out_dim + l.b.len();
        let ln = |l: &LayerNorm| l.gamma.len() + l.beta.len();
        let shared: usize = self
            .attention
            .iter()
            .map(|a| lin(&a.qkv) + lin(&a.out) + ln(&a.ln))
            .sum::<usize>()
            + self
                .ffn
                .iter()
                .map(|f| lin(&f.up) + lin(&f.down) + ln(&f.ln))
                .sum::<usize>();
        let per_layer: usize = self
            .schedule
            .iter()
            .map(|&(a, f)| {
                let (a, f) = (&self.attention[a], &self.ffn[f]);
                lin(&a.qkv) + lin(&a.out) + ln(&a.ln) + lin(&f.up) + lin(&f.down) + ln(&f.ln)
            })
            .sum();
        self.parameter_count() - shared + per_layer
    }

    /// Scalars of the encoder as held in memory: embeddings, attention and
    /// FFN blocks (shared ALBERT blocks counted once) and the pooler; the
    /// task head is not counted.
    pub fn parameter_count(&self) -> usize {
        let lin = |l: &Linear| l.in_dim * l.out_dim + l.b.len();
        let ln = |l: &LayerNorm| l.gamma.len() + l.beta.len();
        let e = &self.embeddings;
        let mut n = e.word.len() + e.position.len() + e.token_type.len() + ln(&e.ln);
        n += e.project.as_ref().map_or(0, lin);
        n += self
            .attention
            .iter()
            .map(|a| lin(&a.qkv) + lin(&a.out) + ln(&a.ln))
            .sum::<usize>();
        n += self
            .ffn
            .iter()
            .map(|f| lin(&f.up) + lin(&f.down) + ln(&f.ln))
            .sum::<usize>();
        n += self.pooler.as_ref().map_or(0, lin);
        n
    }
}

/// Unique attention/FFN blocks plus the schedule that runs them.
pub(crate) type Blocks = (Vec<AttentionBlock>, Vec<FfnBlock>, Vec<(usize, usize)>);

/// ALBERT's layout: one block per (group, inner layer), made by `attention`
/// and `ffn`; with a partial sharing mode (one group per layer) the shared
/// half of every group is group 0's. Layer i runs group
/// `i / (layers / groups)`, its inner layers in order.
pub(crate) fn albert_layout<E>(
    cfg: &ModelConfig,
    mut attention: impl FnMut(usize, usize) -> Result<AttentionBlock, E>,
    mut ffn: impl FnMut(usize, usize) -> Result<FfnBlock, E>,
) -> Result<Blocks, E> {
    use crate::config::Sharing;
    let (groups, inner) = (cfg.num_hidden_groups, cfg.inner_group_num);
    let per_group = cfg.num_layers / groups;
    let (att_shared, ffn_shared) = match cfg.sharing {
        Sharing::Attention => (true, false),
        Sharing::Ffn => (false, true),
        // All shares through the group layout itself.
        Sharing::All | Sharing::None => (false, false),
    };
    let (mut atts, mut ffns) = (Vec::new(), Vec::new());
    let mut att_idx = vec![vec![0; inner]; groups];
    let mut ffn_idx = vec![vec![0; inner]; groups];
    for g in 0..groups {
        for j in 0..inner {
            att_idx[g][j] = if att_shared && g > 0 {
                att_idx[0][j]
            } else {
                atts.push(attention(g, j)?);
                atts.len() - 1
            };
            ffn_idx[g][j] = if ffn_shared && g > 0 {
                ffn_idx[0][j]
            } else {
                ffns.push(ffn(g, j)?);
                ffns.len() - 1
            };
        }
    }
    let schedule = (0..cfg.num_layers)
        .flat_map(|i| {
            let g = i / per_group;
            (0..inner)
                .map(|j| (att_idx[g][j], ffn_idx[g][j]))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok((atts, ffns, schedule))
}
