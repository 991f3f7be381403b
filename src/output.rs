//! What a forward pass returns, in the packed layout of its batch.

/// Outputs of one forward pass. Per-token arrays are `[tokens, width]` in the
/// batch's packed order; per-sequence arrays are `[seqs, width]`.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// last_hidden_state, `[tokens, H]`.
    pub hidden: Vec<f32>,
    /// pooler_output (tanh pooler), `[seqs, H]`, where the model has one.
    pub pooled: Option<Vec<f32>>,
    pub head: HeadOutput,
}

#[derive(Debug, Clone)]
pub enum HeadOutput {
    None,
    /// MLM `[tokens, vocab]`, token classification `[tokens, labels]`,
    /// ELECTRA discriminator `[tokens, 1]`.
    TokenLogits(Vec<f32>),
    /// Sequence classification `[seqs, labels]`.
    SequenceLogits(Vec<f32>),
    /// Extractive QA, `[tokens]` each.
    StartEnd {
        start: Vec<f32>,
        end: Vec<f32>,
    },
    /// AlbertForPreTraining: MLM `[tokens, vocab]` and sentence order `[seqs, 2]`.
    PreTraining {
        mlm: Vec<f32>,
        sop: Vec<f32>,
    },
}
