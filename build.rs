//! Builds bertrt's kernels twice:
//!
//! 1. With the `emulator` feature (tests; Linux only): every `kernels/*.cu`
//!    compiled by the host C++ compiler against the SIMT emulation
//!    (`kernels/simt_emu.h`, `kernels/simt_emu.cpp`) into a static library,
//!    so the kernels run (slowly) on the CPU in tests.
//! 2. When nvcc is found: the same sources (one translation unit that includes
//!    them all) into one fatbin in OUT_DIR with SASS for sm_80/86/89/90 and
//!    compute_90 PTX. Then `cfg(bertrt_fatbin)` is set and `BERTRT_FATBIN`
//!    names the file, for `include_bytes!(env!("BERTRT_FATBIN"))`. Without
//!    nvcc the build still succeeds, with one warning: the CUDA backend is
//!    still compiled and linked, with an empty fatbin, so `CudaSeam::open`
//!    (`--device cuda`) fails with "built without CUDA kernels" and
//!    `--device auto` falls back to the CPU with a warning; the emulated
//!    kernels (step 1) are unaffected.
//!
//! nvcc is looked up in: $NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, $PATH, then a
//! pip-installed nvidia-cuda-nvcc (site-packages/nvidia/cu13/bin). Set
//! BERTRT_NO_CUDA=1 to skip the fatbin even when nvcc exists.
//! No --use_fast_math: GELU needs the accurate erff.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// SASS for each of these, plus PTX for the last (JIT on newer GPUs).
const ARCHS: &[&str] = &["80", "86", "89", "90"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let kernels_dir = manifest.join("kernels");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());

    println!("cargo:rustc-check-cfg=cfg(bertrt_fatbin)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH", "BERTRT_NO_CUDA"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels_dir)
        .expect("kernels/ directory")
        .map(|e| e.expect("kernels/ entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("cu" | "cuh" | "h" | "cpp")
            )
        })
        .collect();
    sources.sort();
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
    }
    let cu: Vec<&PathBuf> = sources
        .iter()
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("cu"))
        .collect();

    // Tests only (the `emulator` feature): ucontext fibers and pthreads, so Linux only.
    if env::var_os("CARGO_FEATURE_EMULATOR").is_some() {
        if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
            panic!(
                "the `emulator` feature (the SIMT emulation the tests run) builds on Linux only"
            );
        }
        build_emulation(&kernels_dir, &cu, &sources, &out_dir);
    }
    build_fatbin(&kernels_dir, &cu, &sources, &out_dir);
    embed_git_commit(&manifest);
    host_amx_cfg();
}

/// `cfg(host_amx)` and `cfg(host_bf16)` when the machine building (and, for
/// `cargo test`, running) this crate reports AMX tiles with AMX-BF16, or
/// AVX512-BF16: the tests that need them run there and are listed as
/// ignored elsewhere, rather than passing without having run. `cfg(host_amd)`
/// on an AMD CPU, where bf16 takes the `vdpbf16ps` tiles. /proc/cpuinfo's
/// mtime is the boot time, so a target/ reused on another machine re-checks.
fn host_amx_cfg() {
    println!("cargo:rustc-check-cfg=cfg(host_amx)");
    println!("cargo:rustc-check-cfg=cfg(host_bf16)");
    println!("cargo:rustc-check-cfg=cfg(host_amd)");
    println!("cargo:rerun-if-changed=/proc/cpuinfo");
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has = |f: &str| {
        flags
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|w| w == f))
    };
    if has("amx_tile") && has("amx_bf16") {
        println!("cargo:rustc-cfg=host_amx");
    }
    if has("avx512_bf16") {
        println!("cargo:rustc-cfg=host_bf16");
    }
    if flags
        .lines()
        .any(|l| l.starts_with("vendor_id") && l.ends_with("AuthenticAMD"))
    {
        println!("cargo:rustc-cfg=host_amd");
    }
}

/// `BERTRT_GIT_COMMIT`: the commit this build came from ("unknown" outside a
/// git checkout), so reports never ask `git` at run time in whatever
/// directory they were started from. Rebuilt when HEAD or its branch moves.
fn embed_git_commit(manifest: &Path) {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(manifest)
            .args(args)
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BERTRT_GIT_COMMIT={commit}");
    // HEAD itself, the branch it names, and packed refs (a worktree's HEAD
    // and refs live in different git dirs: ask git for each path).
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for p in ["HEAD", "packed-refs"]
        .into_iter()
        .map(String::from)
        .chain(branch)
    {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// The host-compiled kernels + the SIMT runtime, as `libbertrt_emu.a`.
fn build_emulation(kernels_dir: &Path, cu: &[&PathBuf], sources: &[PathBuf], out_dir: &Path) {
    let fp = fingerprint(sources, &["CXX", "CXXFLAGS", "OPT_LEVEL", "PROFILE"]);
    if up_to_date(&out_dir.join("libbertrt_emu.a"), &fp) {
        println!("cargo:rustc-link-search=native={}", out_dir.display());
        println!("cargo:rustc-link-lib=static=bertrt_emu");
        println!("cargo:rustc-link-lib=stdc++");
        return;
    }
    let header = kernels_dir.join("simt_emu.h");
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        // Emulation speed matters for test time even in the test profile.
        .opt_level(2)
        .flag("-x")
        .flag("c++")
        .flag("-include")
        .flag(header.to_str().unwrap())
        .flag("-pthread")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-unused-function")
        // `#pragma unroll` is for nvcc.
        .flag_if_supported("-Wno-unknown-pragmas")
        .include(kernels_dir)
        .file(kernels_dir.join("simt_emu.cpp"));
    for f in cu {
        b.file(f);
    }
    b.compile("bertrt_emu");
    write_stamp(&out_dir.join("libbertrt_emu.a"), &fp);
}

/// Sizes and modification times of the sources plus the settings that shape
/// the output. build.rs also reruns when only the git commit moved; an equal
/// fingerprint then means the compiled outputs in OUT_DIR are still current.
fn fingerprint(sources: &[PathBuf], env_vars: &[&str]) -> String {
    let mut fp = String::new();
    for s in sources {
        let m = std::fs::metadata(s).ok();
        let t = m
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        fp += &format!("{} {} {t}\n", s.display(), m.map_or(0, |m| m.len()));
    }
    for v in env_vars {
        fp += &format!("{v}={:?}\n", env::var_os(v));
    }
    fp
}

fn stamp_of(output: &Path) -> PathBuf {
    output.with_extension("stamp")
}

fn up_to_date(output: &Path, fp: &str) -> bool {
    output.is_file() && std::fs::read_to_string(stamp_of(output)).is_ok_and(|s| s == fp)
}

fn write_stamp(output: &Path, fp: &str) {
    std::fs::write(stamp_of(output), fp).expect("write the build stamp in OUT_DIR");
}

fn build_fatbin(kernels_dir: &Path, cu: &[&PathBuf], sources: &[PathBuf], out_dir: &Path) {
    if env::var_os("BERTRT_NO_CUDA").is_some_and(|v| v != "0") {
        println!("cargo:warning=bertrt: BERTRT_NO_CUDA set: CUDA kernels are not built; --device cuda will report that this build has none");
        return;
    }
    let Some(nvcc) = find_nvcc() else {
        println!(
            "cargo:warning=bertrt: nvcc not found (NVCC, CUDA_HOME, CUDA_PATH, PATH, pip nvidia-cuda-nvcc): \
             CUDA kernels are not built; --device cuda will report that this build has none"
        );
        return;
    };
    // One translation unit, so nvcc writes one fatbin.
    let unity = out_dir.join("bertrt_kernels.cu");
    let mut text =
        String::from("// generated by build.rs: every kernels/*.cu in one translation unit\n");
    for f in cu {
        text.push_str(&format!("#include \"{}\"\n", f.display()));
    }
    std::fs::write(&unity, text).expect("write bertrt_kernels.cu");
    let fatbin = out_dir.join("bertrt.fatbin");
    let fp = fingerprint(sources, &[]) + &format!("{} {ARCHS:?}", nvcc.display());
    if !up_to_date(&fatbin, &fp) {
        run_nvcc(&nvcc, kernels_dir, &unity, &fatbin);
        write_stamp(&fatbin, &fp);
    }
    println!("cargo:rustc-env=BERTRT_FATBIN={}", fatbin.display());
    println!("cargo:rustc-cfg=bertrt_fatbin");
}

fn run_nvcc(nvcc: &Path, kernels_dir: &Path, unity: &Path, fatbin: &Path) {
    let mut cmd = Command::new(nvcc);
    cmd.arg("-fatbin").args(["-O3", "-lineinfo", "-std=c++17"]);
    for a in ARCHS {
        cmd.arg("-gencode")
            .arg(format!("arch=compute_{a},code=sm_{a}"));
    }
    let last = ARCHS.last().unwrap();
    cmd.arg("-gencode")
        .arg(format!("arch=compute_{last},code=compute_{last}"));
    cmd.arg("-I")
        .arg(kernels_dir)
        .arg("-o")
        .arg(fatbin)
        .arg(unity);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", nvcc.display()));
    if !out.status.success() {
        panic!(
            "nvcc failed ({}):\n{}\n{}\n(set BERTRT_NO_CUDA=1 to build without the CUDA kernels)",
            nvcc.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn find_nvcc() -> Option<PathBuf> {
    let exe = if cfg!(windows) { "nvcc.exe" } else { "nvcc" };
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = env::var_os(var) {
            let p = PathBuf::from(root).join("bin").join(exe);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let p = dir.join(exe);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    // pip install nvidia-cuda-nvcc: site-packages/nvidia/cu13/bin/nvcc.
    let py = Command::new("python3")
        .args([
            "-c",
            "import site; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&py.stdout)
        .lines()
        .map(|sp| Path::new(sp.trim()).join("nvidia/cu13/bin").join(exe))
        .find(|p| p.is_file())
}
