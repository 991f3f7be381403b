//! How an engine is loaded: device, number format and threads. The CLI, the
//! server and the Python package all parse into these, so `--dtype` and
//! `--threads` mean the same everywhere.

use crate::engine::Device;
use crate::error::{Error, Result};

/// The number format the forward pass computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// CPU, the default there: HF-exact.
    F32,
    /// CPU: GEMMs in bf16 (AVX512-BF16 or AMX), f32 accumulation and
    /// everything else in f32.
    Bf16,
    /// CUDA, the only format there.
    F16,
}

impl std::str::FromStr for Dtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Dtype> {
        match s {
            "f32" | "float32" => Ok(Dtype::F32),
            "bf16" | "bfloat16" => Ok(Dtype::Bf16),
            "f16" | "float16" | "fp16" => Ok(Dtype::F16),
            _ => Err(Error::Input(format!(
                "dtype '{s}': use f32 or bf16 (cpu), f16 (cuda)"
            ))),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        })
    }
}

impl Dtype {
    /// Whether the CPU backend computes in this format.
    pub fn on_cpu(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::Bf16)
    }
}

/// Everything [`crate::Engine::load_with`] needs besides the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    pub device: Device,
    /// None: the device's default (f32 on the CPU, f16 on CUDA).
    pub dtype: Option<Dtype>,
    /// Threads for every parallel part of the CPU forward pass (GEMMs,
    /// attention, elementwise work). None: one per logical CPU.
    pub threads: Option<usize>,
    /// CUDA: run small batches' encoder as CUDA graphs, one captured per
    /// shape bucket (see `backend::fp16::staging::Bucket`). On by default.
    pub cuda_graphs: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Auto,
            dtype: None,
            threads: None,
            cuda_graphs: true,
        }
    }
}

impl LoadOptions {
    pub fn on(device: Device) -> Self {
        LoadOptions {
            device,
            ..Default::default()
        }
    }

    /// Checks the pairing of device and dtype and the thread count before
    /// anything is loaded.
    pub fn validate(&self) -> Result<()> {
        if self.threads == Some(0) {
            return Err(Error::Input("threads must be at least 1".into()));
        }
        match (self.device, self.dtype) {
            (_, None) => Ok(()),
            (Device::Cpu, Some(d)) if !d.on_cpu() => Err(Error::Input(format!(
                "dtype {d} is not available on device cpu (use f32 or bf16)"
            ))),
            (Device::Cuda(n), Some(d)) if d != Dtype::F16 => Err(Error::Input(format!(
                "dtype {d} is not available on device cuda:{n} (use f16)"
            ))),
            _ => Ok(()),
        }
    }

    /// With device auto an explicit CPU dtype picks the CPU, and f16 needs
    /// CUDA: the device the options really ask for.
    pub fn resolved_device(&self) -> Device {
        match (self.device, self.dtype) {
            (Device::Auto, Some(d)) if d.on_cpu() => Device::Cpu,
            (Device::Auto, Some(Dtype::F16)) => Device::Cuda(0),
            (d, _) => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairings_name_both_sides() {
        let o = |device, dtype| LoadOptions {
            device,
            dtype,
            ..Default::default()
        };
        let e = o(Device::Cpu, Some(Dtype::F16)).validate().unwrap_err();
        assert!(
            e.to_string().contains("f16") && e.to_string().contains("cpu"),
            "{e}"
        );
        let e = o(Device::Cuda(1), Some(Dtype::Bf16))
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().contains("bf16") && e.to_string().contains("cuda:1"),
            "{e}"
        );
        assert!(o(Device::Cpu, Some(Dtype::Bf16)).validate().is_ok());
        assert!(o(Device::Cuda(0), Some(Dtype::F16)).validate().is_ok());
        assert_eq!(
            o(Device::Auto, Some(Dtype::Bf16)).resolved_device(),
            Device::Cpu
        );
        let t = LoadOptions {
            threads: Some(0),
            ..Default::default()
        };
        assert!(t.validate().unwrap_err().to_string().contains("threads"));
        assert!("int8"
            .parse::<Dtype>()
            .unwrap_err()
            .to_string()
            .contains("int8"));
    }
}
