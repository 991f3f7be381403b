//! What users do with a model, each equal to the HF pipeline of the same name.
pub mod classify;
pub mod detect;
pub mod embed;
pub mod fill_mask;
pub mod qa;

/// Where a task's forwards run, each asked for only what the task needs: the
/// engine itself (`&|b, w| engine.forward_want(b, w)`), or a
/// [`crate::batcher::Batcher`] shared with other callers
/// ([`crate::batcher::Batcher::forward_want`]); forwards are padding-free, so
/// the answers are the same either way.
pub type RunForward<'a> = &'a (dyn Fn(&crate::batch::Batch, &crate::output::Want) -> crate::Result<crate::output::Wanted>
         + Sync);

/// Numerically stable softmax, in f64 as the comparison with PyTorch needs
/// only f32 accuracy but ties must order the same way.
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = x.iter().map(|&v| ((v - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Indices of the k largest values, largest first (ties: lower index first).
pub fn top_k(x: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// The tasks as methods, for `Engine::load(...)?.embed(...)` style use.
impl crate::engine::Engine {
    pub fn embed(
        &self,
        texts: &[&str],
        opts: &embed::EmbedOptions,
    ) -> crate::Result<Vec<embed::Embedding>> {
        embed::embed(self, texts, opts)
    }
    pub fn fill_mask(
        &self,
        text: &str,
        top_k: usize,
    ) -> crate::Result<Vec<Vec<fill_mask::MaskPrediction>>> {
        fill_mask::fill_mask(self, text, top_k)
    }
    pub fn detect(&self, text: &str) -> crate::Result<Vec<detect::TokenScore>> {
        detect::detect(self, text)
    }
    pub fn qa(
        &self,
        items: &[(&str, &str)],
        opts: &qa::QaOptions,
    ) -> crate::Result<Vec<Vec<qa::Answer>>> {
        qa::qa_many(self, items, opts)
    }
    pub fn classify(
        &self,
        text: &str,
        pair: Option<&str>,
    ) -> crate::Result<Vec<classify::LabelScore>> {
        classify::classify(self, text, pair)
    }
    pub fn classify_tokens(&self, text: &str) -> crate::Result<Vec<classify::TokenLabel>> {
        classify::classify_tokens(self, text, &["O"])
    }
}
