//! The whole fp16 forward pass (Fp16Model: the same launches, params structs
//! and geometry as on the GPU) run through the SIMT emulation seam, against
//! the f32 CPU engine, for every family and head.

mod common;

use bertrt::backend::emu::EmuSeam;
use bertrt::backend::fp16::Fp16Model;
use common::fp16::*;

fn check(name: &str) {
    let w = weights(&common::model_dir(name));
    let cfg = &w.config;
    let seqs = awkward_sequences(cfg);
    let batch = bertrt::batch::Batch::pack(&seqs, cfg).unwrap();
    let model = Fp16Model::new(EmuSeam::new(), &w).unwrap();
    let out = model.forward(&batch).unwrap();
    compare_forward(name, &w, &batch, &out, MIN_COS, ATOL);
    // The workspace is reused: a second, smaller batch (two of the sequences,
    // in the other order) gives the same rows as in the first batch.
    let (a, b) = (3, 1);
    let small = bertrt::batch::Batch::pack(&[seqs[a].clone(), seqs[b].clone()], cfg).unwrap();
    let again = model.forward(&small).unwrap();
    compare_forward(
        &format!("{name} second batch"),
        &w,
        &small,
        &again,
        MIN_COS,
        ATOL,
    );
    let h = cfg.hidden_size;
    let rows = |o: &bertrt::output::ForwardOutput, bt: &bertrt::batch::Batch, s: usize| {
        o.hidden[bt.seq_range(s).start * h..bt.seq_range(s).end * h].to_vec()
    };
    assert_eq!(
        rows(&again, &small, 0),
        rows(&out, &batch, a),
        "{name}: sequence {a} differs in the second batch"
    );
    assert_eq!(
        rows(&again, &small, 1),
        rows(&out, &batch, b),
        "{name}: sequence {b} differs in the second batch"
    );
}

/// Every model folder in tests/fixtures/models (every family and head).
#[test]
fn every_fixture_model_matches_the_cpu_engine() {
    common::for_each_fixture_model(check);
}

/// Out of device memory is an error that says how much was needed and what
/// would fit, and the model keeps working with a batch that fits.
#[test]
fn out_of_memory_names_sizes_and_recovers() {
    let w = weights(&common::model_dir("bert_mlm"));
    let probe = Fp16Model::new(EmuSeam::new(), &w).unwrap();
    let weights_bytes = probe.weight_bytes;
    // Room for the weights and a workspace of about 128 tokens, not 4096.
    let limit = weights_bytes + 64 * 1024 + probe.workspace_bytes(128, 8);
    let model = Fp16Model::new(EmuSeam::with_memory_limit(limit), &w).unwrap();
    let cfg = &w.config;
    let seq = |n: usize| bertrt::batch::SequenceIds {
        input_ids: vec![5; n],
        token_type_ids: vec![],
    };
    let big: Vec<_> = (0..64).map(|_| seq(64)).collect();
    let err = model
        .forward(&bertrt::batch::Batch::pack(&big, cfg).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot allocate") && err.contains("4096 tokens") && err.contains("would fit"),
        "{err}"
    );
    let small = bertrt::batch::Batch::pack(&[seq(10), seq(3)], cfg).unwrap();
    model.forward(&small).unwrap();
}

/// Every kernel and the GEMM through the emulated launch seam.
#[test]
fn kernels_through_the_emulated_seam() {
    for line in common::seam_kernels::check_all_kernels(&EmuSeam::new()) {
        common::record::figure(&line);
    }
}

/// The emulated GEMM refuses an output that overlaps an input: it would be a
/// mutable slice aliasing a shared one.
#[test]
fn emulated_gemm_refuses_an_output_overlapping_an_input() {
    use bertrt::backend::fp16::Seam;
    let s = EmuSeam::new();
    let (m, n, k) = (4, 4, 4);
    let x = s.alloc(m * k * 2).unwrap();
    let w = s.alloc(n * k * 2).unwrap();
    let err = s.gemm(x, w, x, m, n, k).unwrap_err().to_string();
    assert!(err.contains("overlaps an input"), "{err}");
    let y = s.alloc(m * n * 2).unwrap();
    s.gemm(x, w, y, m, n, k).unwrap();
}

/// A tied MLM decoder is the word embeddings, held once on the host and
/// uploaded once: the device holds exactly one fp16 copy of every tensor the
/// host model holds, and the tied decoder holds none of its own.
#[test]
fn tied_decoder_is_held_and_uploaded_once() {
    let w = weights(&common::model_dir("bert_mlm"));
    let bertrt::model::HeadWeights::MaskedLm(m) = &w.head else {
        panic!("bert_mlm: expected an MLM head");
    };
    assert!(
        m.decoder.w.is_none(),
        "bert_mlm: tied decoder copied on the host"
    );
    let mut host_values = 0usize;
    w.map(&mut |x: &Vec<f32>| {
        host_values += x.len();
        Ok(())
    })
    .unwrap();
    let model = Fp16Model::new(EmuSeam::new(), &w).unwrap();
    assert_eq!(model.weight_bytes, 2 * host_values);
}

/// Records the name of every kernel launched, then launches it on the emulation.
struct NamingSeam {
    inner: EmuSeam,
    /// Shared with the test (the model owns the seam).
    launched: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
}

impl bertrt::backend::fp16::Seam for NamingSeam {
    fn alloc(&self, bytes: usize) -> bertrt::Result<u64> {
        self.inner.alloc(bytes)
    }
    fn free(&self, ptr: u64) -> bertrt::Result<()> {
        self.inner.free(ptr)
    }
    fn upload(&self, dst: u64, src: &[u8]) -> bertrt::Result<()> {
        self.inner.upload(dst, src)
    }
    fn download(&self, src: u64, dst: &mut [u8]) -> bertrt::Result<()> {
        self.inner.download(src, dst)
    }
    fn upload_async(&self, dst: u64, src: &[u8]) -> bertrt::Result<()> {
        self.inner.upload_async(dst, src)
    }
    fn reserve_readback(&self, bytes: usize) -> bertrt::Result<()> {
        self.inner.reserve_readback(bytes)
    }
    fn download_async(&self, src: u64, offset: usize, bytes: usize) -> bertrt::Result<()> {
        self.inner.download_async(src, offset, bytes)
    }
    fn read_back(&self, offset: usize, dst: &mut [u8]) -> bertrt::Result<()> {
        self.inner.read_back(offset, dst)
    }
    fn traffic(&self) -> bertrt::backend::fp16::Traffic {
        self.inner.traffic()
    }
    fn launch<P: bertrt::backend::fp16::Launch>(
        &self,
        params: P,
        geometry: bertrt::backend::kernels::Geometry,
    ) -> bertrt::Result<()> {
        self.launched.lock().unwrap().push(P::NAME);
        self.inner.launch(params, geometry)
    }
    fn gemm(&self, x: u64, w: u64, y: u64, m: usize, n: usize, k: usize) -> bertrt::Result<()> {
        self.inner.gemm(x, w, y, m, n, k)
    }
    #[allow(clippy::too_many_arguments)]
    fn gemm_bias(
        &self,
        x: u64,
        w: u64,
        bias: u64,
        y: u64,
        m: usize,
        n: usize,
        k: usize,
        epilogue: bertrt::backend::fp16::Epilogue,
    ) -> bertrt::Result<()> {
        self.inner.gemm_bias(x, w, bias, y, m, n, k, epilogue)
    }
    fn synchronize(&self) -> bertrt::Result<()> {
        self.inner.synchronize()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Head sizes 32, 64 and 128 run attention on tensor cores (attention_tc.cu),
/// others on attention.cu; either way the model matches the CPU engine.
/// Random weights (attention scaled up), two layers, the awkward batch up
/// to 96 tokens.
#[test]
fn tensor_core_attention_is_selected_by_head_size_and_matches_the_cpu_engine() {
    for (hidden, heads, kernel) in [
        (64, 2, "attention_tc_d32_f16"),
        (128, 2, "attention_tc_d64_f16"),
        (256, 2, "attention_tc_d128_f16"),
        (48, 2, "attention_f16"), // head_dim 24: the fallback
    ] {
        let cfg = bertrt::config::ModelConfig::from_json_str(
            &format!(
                r#"{{"model_type":"bert","hidden_size":{hidden},"num_attention_heads":{heads},"num_hidden_layers":2,
                "intermediate_size":{},"max_position_embeddings":96,"vocab_size":200,"type_vocab_size":2}}"#,
                hidden * 2
            ),
            std::path::Path::new("inline"),
        )
        .unwrap();
        let mut w = bertrt::model::random_weights(&cfg, 5).unwrap();
        // Sharper attention than the 0.02-std init gives (scores of order 1),
        // and a context projection as large as the residual, so the attention
        // output weighs in the hidden states.
        for a in &mut w.attention {
            a.qkv.w.iter_mut().for_each(|v| *v *= 6.0);
            a.out.w.iter_mut().for_each(|v| *v *= 6.0);
        }
        let batch = awkward_batch(&w.config);
        let launched = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seam = NamingSeam {
            inner: EmuSeam::new(),
            launched: launched.clone(),
        };
        let model = Fp16Model::new(seam, &w).unwrap();
        let out = model.forward(&batch).unwrap();
        compare_forward(
            &format!("bert h{hidden} heads{heads} ({kernel})"),
            &w,
            &batch,
            &out,
            MIN_COS,
            ATOL,
        );
        let attention: Vec<&str> = launched
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|n| n.starts_with("attention"))
            .collect();
        assert_eq!(
            attention,
            vec![kernel; 2],
            "hidden {hidden}, heads {heads}: attention launches"
        );
    }
}

/// The persisting-L2 window covers exactly the blocks the schedule runs more
/// than once: ALBERT's (all shared, or attention or FFN only), none for a
/// model without sharing. Under emulation the switch does nothing and says so.
#[test]
fn l2_window_covers_the_shared_blocks_only() {
    for (name, shares) in [
        ("albert_mlm", true),
        ("albert_share_attention", true),
        ("albert_share_ffn", true),
        ("albert_share_none", false),
        ("bert_mlm", false),
    ] {
        let w = weights(&common::model_dir(name));
        let model = Fp16Model::new(EmuSeam::new(), &w).unwrap();
        let window = model.shared_layer_window();
        assert_eq!(window.is_some(), shares, "{name}: window {window:?}");
        let on = model.set_l2_persist(true).unwrap();
        let want_on = if shares {
            "L2 persistence: off (not available on this device)"
        } else {
            "L2 persistence: off (the model shares no layers)"
        };
        assert_eq!(on, want_on, "{name}");
        assert_eq!(model.set_l2_persist(false).unwrap(), "L2 persistence: off");
        if let Some((_, bytes)) = window {
            // At least the shared tensors' own bytes (fp16).
            let c = &w.config;
            let (h, i) = (c.hidden_size, c.intermediate_size);
            let att = 4 * h * h + 4 * h + 2 * h;
            let ffn = 2 * h * i + i + h + 2 * h;
            let runs = |f: fn(&(usize, usize)) -> usize, k: usize| {
                w.schedule.iter().filter(|s| f(s) == k).count() > 1
            };
            let mut want = 0;
            for k in 0..w.attention.len() {
                if runs(|s| s.0, k) {
                    want += att * 2;
                }
            }
            for k in 0..w.ffn.len() {
                if runs(|s| s.1, k) {
                    want += ffn * 2;
                }
            }
            assert!(
                bytes >= want,
                "{name}: window {bytes} bytes < {want} shared"
            );
        }
    }
}
