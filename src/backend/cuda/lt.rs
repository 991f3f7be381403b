//! GEMMs with a fused epilogue through cuBLASLt (`Seam::gemm_bias`), and
//! the persisting-L2 window (`Seam::l2_persist`).
//!
//! One plan per (m, n, k, epilogue, bias or not): the matmul descriptor, the
//! three matrix layouts and the algorithm `cublasLtMatmulAlgoGetHeuristic`
//! picked, made on a shape's first call and reused; only the bias pointer is
//! set per call. The epilogue runs in the compute type (fp32) on the
//! accumulator and the result is rounded to fp16 once; the bias is fp16 (its
//! default type for an fp16 D), widened to fp32 before the add.

use crate::backend::fp16::{DevPtr, Epilogue};
use crate::error::{Error, Result};
use cudarc::cublaslt::{result as lt, sys as lt_sys};
use cudarc::driver::{result as drv, sys as drv_sys};
use std::collections::HashMap;
use std::ffi::c_void;

/// cuBLASLt's scratch: NVIDIA's recommendation for Hopper (32 MiB) covers
/// every earlier architecture too.
const WORKSPACE_BYTES: usize = 32 << 20;

fn lt_err(what: String) -> impl FnOnce(lt::CublasError) -> Error {
    move |e| Error::Device(format!("{what}: {e:?}"))
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct PlanKey {
    m: usize,
    n: usize,
    k: usize,
    epilogue: Epilogue,
    bias: bool,
}

/// Everything a matmul of one shape needs but the pointers.
struct Plan {
    desc: lt_sys::cublasLtMatmulDesc_t,
    /// w, x, y in cuBLASLt's column-major view (see `Lt::plan`).
    a: lt_sys::cublasLtMatrixLayout_t,
    b: lt_sys::cublasLtMatrixLayout_t,
    c: lt_sys::cublasLtMatrixLayout_t,
    algo: lt_sys::cublasLtMatmulAlgo_t,
}

impl Plan {
    /// Frees what exists of a (possibly partly built) plan.
    fn destroy(&self) {
        // SAFETY: each handle was created by cuBLASLt for this plan (or is
        // null, which the destroy functions accept) and is destroyed once.
        unsafe {
            for l in [self.a, self.b, self.c] {
                if !l.is_null() {
                    let _ = lt::destroy_matrix_layout(l);
                }
            }
            if !self.desc.is_null() {
                let _ = lt::destroy_matmul_desc(self.desc);
            }
        }
    }
}

/// The cuBLASLt handle, its workspace and the plan cache. Used under the
/// seam's lock, with the seam's context bound.
pub(super) struct Lt {
    handle: lt_sys::cublasLtHandle_t,
    workspace: DevPtr,
    plans: HashMap<PlanKey, Plan>,
}

impl Lt {
    /// In the bound context.
    pub(super) fn new() -> Result<Lt> {
        // SAFETY: probes for the shared library only.
        if !unsafe { lt_sys::is_culib_present() } {
            return Err(Error::Device(
                "cuBLASLt (libcublasLt.so) could not be loaded: add the CUDA toolkit's lib64, or PyTorch's site-packages/nvidia/cublas/lib, to LD_LIBRARY_PATH".into(),
            ));
        }
        let handle = lt::create_handle().map_err(lt_err("cublasLtCreate".into()))?;
        // SAFETY: plain allocation in the bound context.
        let workspace = match unsafe { drv::malloc_sync(WORKSPACE_BYTES) } {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: created just above, destroyed once.
                let _ = unsafe { lt::destroy_handle(handle) };
                return Err(Error::Device(format!(
                    "cuBLASLt workspace ({} MiB): {e:?}",
                    WORKSPACE_BYTES >> 20
                )));
            }
        };
        Ok(Lt {
            handle,
            workspace,
            plans: HashMap::new(),
        })
    }

    /// Row-major y[m, n] = x[m, k] w[n, k]^T is column-major
    /// y^T (n x m) = op(A) B with A = w (k x n, ld k) transposed and B = x
    /// (k x m, ld k); C = D = y^T (n x m, ld n). The bias is per row of D:
    /// n values, one per output feature.
    fn plan(&mut self, key: PlanKey) -> Result<&Plan> {
        if !self.plans.contains_key(&key) {
            let plan = self.make_plan(key)?;
            self.plans.insert(key, plan);
        }
        Ok(&self.plans[&key])
    }

    fn make_plan(&self, key: PlanKey) -> Result<Plan> {
        let PlanKey {
            m,
            n,
            k,
            epilogue,
            bias,
        } = key;
        let what = |step: &str| format!("cuBLASLt {step} for {m}x{n}x{k} {epilogue:?}");
        let f16 = lt_sys::cudaDataType::CUDA_R_16F;
        let mut plan = Plan {
            desc: std::ptr::null_mut(),
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            // SAFETY: a plain C struct of integers; overwritten below before use.
            algo: unsafe { std::mem::zeroed() },
        };
        let r = (|| -> Result<()> {
            plan.desc = lt::create_matmul_desc(
                lt_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                lt_sys::cudaDataType::CUDA_R_32F,
            )
            .map_err(lt_err(what("matmul desc")))?;
            plan.a = lt::create_matrix_layout(f16, k as u64, n as u64, k as i64)
                .map_err(lt_err(what("layout A")))?;
            plan.b = lt::create_matrix_layout(f16, k as u64, m as u64, k as i64)
                .map_err(lt_err(what("layout B")))?;
            plan.c = lt::create_matrix_layout(f16, n as u64, m as u64, n as i64)
                .map_err(lt_err(what("layout C")))?;
            let trans_a: i32 = 1; // CUBLAS_OP_T
            let epi = match (epilogue, bias) {
                (Epilogue::Bias, true) => lt_sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
                (Epilogue::Bias, false) => lt_sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT,
                (Epilogue::BiasGeluTanh, true) => {
                    lt_sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS
                }
                (Epilogue::BiasGeluTanh, false) => {
                    lt_sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU
                }
            };
            let attr = lt_sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA;
            // SAFETY: `desc` is live; each value is a local of the type the
            // attribute takes (int32 for TRANSA, the epilogue enum for EPILOGUE).
            unsafe {
                lt::set_matmul_desc_attribute(
                    plan.desc,
                    attr,
                    &trans_a as *const i32 as *const c_void,
                    std::mem::size_of::<i32>(),
                )
                .map_err(lt_err(what("TRANSA")))?;
                lt::set_matmul_desc_attribute(
                    plan.desc,
                    lt_sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                    &epi as *const lt_sys::cublasLtEpilogue_t as *const c_void,
                    std::mem::size_of::<lt_sys::cublasLtEpilogue_t>(),
                )
                .map_err(lt_err(what("EPILOGUE")))?;
            }
            let pref = lt::create_matmul_pref().map_err(lt_err(what("preference")))?;
            let max_ws = WORKSPACE_BYTES as u64;
            // SAFETY: `pref` is live; the value is a u64 as MAX_WORKSPACE_BYTES takes;
            // every handle passed to the heuristic is live. `pref` is destroyed once.
            let heuristic = unsafe {
                let set = lt::set_matmul_pref_attribute(
                    pref,
                    lt_sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    &max_ws as *const u64 as *const c_void,
                    std::mem::size_of::<u64>(),
                );
                let h = set.and_then(|()| {
                    lt::get_matmul_algo_heuristic(
                        self.handle,
                        plan.desc,
                        plan.a,
                        plan.b,
                        plan.c,
                        plan.c,
                        pref,
                    )
                });
                let _ = lt::destroy_matmul_pref(pref);
                h
            }
            .map_err(lt_err(what("AlgoGetHeuristic (no algorithm)")))?;
            plan.algo = heuristic.algo;
            Ok(())
        })();
        match r {
            Ok(()) => Ok(plan),
            Err(e) => {
                plan.destroy();
                Err(e)
            }
        }
    }

    /// y = epilogue(x w^T + bias) on `stream` (the seam's); `bias` 0 for none.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_bias(
        &mut self,
        stream: drv_sys::CUstream,
        x: DevPtr,
        w: DevPtr,
        bias: DevPtr,
        y: DevPtr,
        m: usize,
        n: usize,
        k: usize,
        epilogue: Epilogue,
    ) -> Result<()> {
        let key = PlanKey {
            m,
            n,
            k,
            epilogue,
            bias: bias != 0,
        };
        let (handle, workspace) = (self.handle, self.workspace);
        let plan = self.plan(key)?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the plan's handles are live; the bias pointer value is a
        // device address of n halves (the caller's contract), as are x
        // (m*k), w (n*k) and y (m*n); alpha/beta are host f32 (scale type
        // 32F); the workspace holds WORKSPACE_BYTES, the most the algorithm
        // was allowed to ask for.
        unsafe {
            if bias != 0 {
                let b = bias as *const c_void;
                lt::set_matmul_desc_attribute(
                    plan.desc,
                    lt_sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    &b as *const *const c_void as *const c_void,
                    std::mem::size_of::<*const c_void>(),
                )
                .map_err(lt_err(format!("cuBLASLt bias pointer {m}x{n}x{k}")))?;
            }
            lt::matmul(
                handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                w as *const c_void,
                plan.a,
                x as *const c_void,
                plan.b,
                y as *const c_void,
                plan.c,
                y as *mut c_void,
                plan.c,
                &plan.algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream as lt_sys::cudaStream_t,
            )
        }
        .map_err(lt_err(format!("cublasLtMatmul {m}x{n}x{k} {epilogue:?}")))
    }

    /// Shapes planned so far (tests: one heuristic call per shape).
    pub(super) fn planned(&self) -> usize {
        self.plans.len()
    }
}

impl Drop for Lt {
    /// With the seam's context bound (CudaSeam::drop binds it first).
    fn drop(&mut self) {
        for p in self.plans.values() {
            p.destroy();
        }
        // SAFETY: allocated in `new`, freed once; the handle likewise.
        unsafe {
            let _ = drv::free_sync(self.workspace);
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

/// Sets (or, with `None`, clears) a persisting access-policy window on
/// `stream` (the seam's: its kernels and GEMMs), with the persisting L2
/// set-aside sized to it (capped by the device). Returns what was done.
pub(super) fn l2_persist(
    dev: drv_sys::CUdevice,
    stream: drv_sys::CUstream,
    window: Option<(DevPtr, usize)>,
) -> Result<String> {
    let attr = |a| {
        // SAFETY: `dev` came from cuDeviceGet.
        unsafe { drv::device::get_attribute(dev, a) }
            .map_err(|e| Error::Device(format!("cuDeviceGetAttribute: {e:?}")))
    };
    let max_persist =
        attr(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE)?
            as usize;
    let max_window =
        attr(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE)?
            as usize;
    let (base, bytes) = window.unwrap_or((0, 0));
    if window.is_some() && (max_persist == 0 || max_window == 0) {
        return Ok("L2 persistence: not supported by this device (off)".into());
    }
    let set_aside = bytes.min(max_persist);
    let num_bytes = bytes.min(max_window);
    // SAFETY: plain context and stream calls in the bound context; the union
    // value is zeroed, then only its access-policy member is written and read.
    unsafe {
        drv_sys::cuCtxSetLimit(
            drv_sys::CUlimit::CU_LIMIT_PERSISTING_L2_CACHE_SIZE,
            set_aside,
        )
        .result()
        .map_err(|e| Error::Device(format!("cuCtxSetLimit(PERSISTING_L2_CACHE_SIZE): {e:?}")))?;
        let mut v: drv_sys::CUstreamAttrValue = std::mem::zeroed();
        v.accessPolicyWindow = drv_sys::CUaccessPolicyWindow {
            base_ptr: base as *mut c_void,
            num_bytes,
            // The set-aside may be smaller than the window: ask for the share that fits.
            hitRatio: if num_bytes == 0 {
                0.0
            } else {
                (set_aside as f32 / num_bytes as f32).min(1.0)
            },
            hitProp: drv_sys::CUaccessProperty::CU_ACCESS_PROPERTY_PERSISTING,
            missProp: drv_sys::CUaccessProperty::CU_ACCESS_PROPERTY_STREAMING,
        };
        drv_sys::cuStreamSetAttribute(
            stream,
            drv_sys::CUstreamAttrID::CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW,
            &v,
        )
        .result()
        .map_err(|e| Error::Device(format!("cuStreamSetAttribute(ACCESS_POLICY_WINDOW): {e:?}")))?;
        if window.is_none() {
            drv_sys::cuCtxResetPersistingL2Cache()
                .result()
                .map_err(|e| Error::Device(format!("cuCtxResetPersistingL2Cache: {e:?}")))?;
        }
    }
    Ok(match window {
        None => "L2 persistence: off".into(),
        Some(_) => format!(
            "L2 persistence: on, window {:.1} MiB of {:.1} MiB requested, set-aside {:.1} MiB",
            num_bytes as f64 / (1 << 20) as f64,
            bytes as f64 / (1 << 20) as f64,
            set_aside as f64 / (1 << 20) as f64
        ),
    })
}
