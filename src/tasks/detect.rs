//! Replaced-token detection with an ELECTRA discriminator: each token's
//! probability of having been replaced, sigmoid of its logit.

use super::{sigmoid, RunForward};
use crate::config::Head;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::{HeadOutput, Want};
use crate::tokenize::Truncation;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenScore {
    pub index: usize,
    pub token: String,
    pub start: usize,
    pub end: usize,
    pub logit: f32,
    pub probability: f32,
}

/// Scores every non-special token of `text`.
pub fn detect(engine: &Engine, text: &str) -> Result<Vec<TokenScore>> {
    detect_via(engine, text, &|b, w| engine.forward_want(b, w))
}

/// [`detect`] with its forward run by `run`.
pub fn detect_via(engine: &Engine, text: &str, run: RunForward) -> Result<Vec<TokenScore>> {
    if engine.config.head != Head::Discriminator {
        return Err(Error::Input(format!(
            "detect needs an ELECTRA discriminator (ElectraForPreTraining); got {}",
            engine.config.architecture
        )));
    }
    if text.trim().is_empty() {
        return Err(Error::Input("empty text".into()));
    }
    let (encs, batch) = engine.encode_batch(&[(text, None)], None, Truncation::LongestFirst)?;
    let head = run(&batch, &Want::Head)?.into_head()?;
    let HeadOutput::TokenLogits(logits) = &head else {
        return Err(Error::Internal(
            "the discriminator produced no token logits".into(),
        ));
    };
    let e = &encs[0];
    Ok((0..e.ids.len())
        .filter(|&i| e.sequence_ids[i].is_some())
        .map(|i| TokenScore {
            index: i,
            token: e.tokens[i].clone(),
            start: e.offsets[i].0,
            end: e.offsets[i].1,
            logit: logits[i],
            probability: sigmoid(logits[i]),
        })
        .collect())
}
