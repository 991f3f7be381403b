//! How a cell's sequence lengths are drawn, and its random packed batch.

use super::*;

/// How the sequence lengths of a cell are drawn (max length `seq`).
#[derive(Debug, Clone, PartialEq)]
pub enum Lengths {
    /// Every sequence is `seq` long.
    Fixed,
    /// Uniform in [1, seq] (FasterTransformer's variable-length benchmarks).
    Uniform,
    /// Average `fraction * seq` (ByteTransformer reports 0.6): uniform in
    /// [(2f-1) seq, seq] for f >= 0.5, else uniform in [1, 2f seq].
    Average(f64),
    /// Lengths read from a file (one integer per line), drawn at random and
    /// truncated to `seq` as a tokenizer would.
    Real { path: String, lengths: Vec<usize> },
}

impl Lengths {
    /// `fixed`, `uniform`, `avg0.6` (any fraction in (0, 1]), or `real` with `file`.
    pub fn parse(spec: &str, file: Option<&Path>) -> Result<Lengths> {
        let bad = |m: String| Error::Input(format!("lengths '{spec}': {m}"));
        match spec {
            "fixed" => Ok(Lengths::Fixed),
            "uniform" => Ok(Lengths::Uniform),
            "real" => {
                let path = file.ok_or_else(|| bad("needs a FILE (one length per line)".into()))?;
                Self::read_real(path)
            }
            _ => {
                if let Some(f) = spec.strip_prefix("avg") {
                    let f: f64 = f
                        .parse()
                        .map_err(|_| bad("use avgF with F in (0, 1], e.g. avg0.6".into()))?;
                    if !(f > 0.0 && f <= 1.0) {
                        return Err(bad("the average fraction must be in (0, 1]".into()));
                    }
                    Ok(Lengths::Average(f))
                } else {
                    Err(bad(
                        "use fixed, uniform, avgF (e.g. avg0.6) or real FILE".into()
                    ))
                }
            }
        }
    }

    fn read_real(path: &Path) -> Result<Lengths> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut lengths = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let n: usize = l.parse().map_err(|_| {
                Error::Input(format!(
                    "{}:{}: '{l}' is not a length (one positive integer per line)",
                    path.display(),
                    i + 1
                ))
            })?;
            if n == 0 {
                return Err(Error::Input(format!(
                    "{}:{}: length 0",
                    path.display(),
                    i + 1
                )));
            }
            lengths.push(n);
        }
        if lengths.is_empty() {
            return Err(Error::Input(format!("{}: no lengths", path.display())));
        }
        Ok(Lengths::Real {
            path: path.display().to_string(),
            lengths,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Lengths::Fixed => "fixed".into(),
            Lengths::Uniform => "uniform [1, seq]".into(),
            Lengths::Average(f) => format!("avg{f} (mean {f} * seq)"),
            Lengths::Real { path, lengths } => format!("real {path} ({} lengths)", lengths.len()),
        }
    }

    /// `batch` lengths in [1, seq].
    pub fn draw(&self, batch: usize, seq: usize, rng: &mut Rng) -> Vec<usize> {
        let uniform = |rng: &mut Rng, lo: usize, hi: usize| lo + rng.below(hi - lo + 1);
        (0..batch)
            .map(|_| match self {
                Lengths::Fixed => seq,
                Lengths::Uniform => uniform(rng, 1, seq),
                Lengths::Average(f) => {
                    if *f >= 0.5 {
                        let lo = ((2.0 * f - 1.0) * seq as f64).round() as usize;
                        uniform(rng, lo.clamp(1, seq), seq)
                    } else {
                        let hi = (2.0 * f * seq as f64).round() as usize;
                        uniform(rng, 1, hi.clamp(1, seq))
                    }
                }
                Lengths::Real { lengths, .. } => lengths[rng.below(lengths.len())].min(seq),
            })
            .collect()
    }
}

pub use crate::rng::Rng;

/// Random token ids (never the pad id, so RoBERTa positions are plain) for
/// the given lengths, packed.
pub fn random_batch(cfg: &ModelConfig, lengths: &[usize], rng: &mut Rng) -> Result<Batch> {
    let v = cfg.vocab_size;
    let pad = cfg.pad_token_id as usize;
    let seqs: Vec<SequenceIds> = lengths
        .iter()
        .map(|&n| SequenceIds {
            input_ids: (0..n)
                .map(|_| {
                    let id = rng.below(v);
                    (if id == pad { (id + 1) % v } else { id }) as u32
                })
                .collect(),
            token_type_ids: Vec::new(),
        })
        .collect();
    Batch::pack(&seqs, cfg)
}
