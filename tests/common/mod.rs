//! Shared test helpers: fixture paths, golden tensors, tolerant comparison
//! that prints the first mismatches.
#![allow(dead_code)]

pub mod fp16;
pub mod record;
pub mod seam_kernels;

use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// A golden tensor as f64 values plus its shape.
pub struct Golden {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

pub fn load_golden(name: &str) -> HashMap<String, Golden> {
    let path = fixtures()
        .join("golden")
        .join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = HashMap::new();
    for (k, v) in st.tensors() {
        let data: Vec<f64> = match v.dtype() {
            safetensors::Dtype::F32 => v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            safetensors::Dtype::I64 => v
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            d => panic!("golden {k}: unexpected dtype {d:?}"),
        };
        out.insert(
            k,
            Golden {
                shape: v.shape().to_vec(),
                data,
            },
        );
    }
    out
}

/// Compares `got` with `want` element-wise: |got - want| <= atol + rtol*|want|.
/// On failure returns a report with the max error and the first mismatches.
pub fn compare(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: length {} != golden {}",
            got.len(),
            want.len()
        ));
    }
    let mut max_err = 0f64;
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        if err.is_nan() || err > atol + rtol * w.abs() {
            if bad.len() < 8 {
                bad.push(format!("  [{i}] got {g} want {w} (err {err:.3e})"));
            }
            max_err = f64::INFINITY.min(if err.is_nan() {
                f64::INFINITY
            } else {
                max_err.max(err)
            });
        }
        if !err.is_nan() {
            max_err = max_err.max(err);
        }
    }
    if bad.is_empty() {
        Ok(max_err)
    } else {
        Err(format!(
            "{what}: max |err| {max_err:.3e} > {atol:e} + {rtol:e}*|ref|; first mismatches:\n{}",
            bad.join("\n")
        ))
    }
}
