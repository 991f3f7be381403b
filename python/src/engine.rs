//! `bertrt.Engine`: a loaded model and its tasks. Each method checks its
//! arguments with the GIL held, then tokenizes and runs the forward passes
//! with the GIL released (`py.detach`), so other Python threads run meanwhile
//! and one engine serves many threads (`bertrt::Engine` is Send + Sync).

use crate::errors::{load_to_py, to_py};
use crate::results::{embeddings_to_numpy, first_row, to_python};
use bertrt::tasks::{classify, detect, embed, fill_mask, qa};
use bertrt::tokenize::{Tokenized, Truncation};
use bertrt::{Dtype, Engine, LoadOptions};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

/// Inputs per forward pass when a list is given (the CLI's batch size).
const BATCH: usize = 32;

/// Engine(model, device="auto", dtype=None, threads=None)
///
/// A loaded model: a folder, or a hub id found in the HF cache (as the CLI's
/// --model). device: "auto", "cpu", "cuda" or "cuda:N"; dtype: None, "f32"
/// or "bf16" (CPU), "f16" (CUDA); threads: CPU threads for this engine. Safe
/// to share between threads; every method releases the GIL while it works.
/// Raises FileNotFoundError (missing model folder or file), ValueError (bad
/// values or model files), RuntimeError (the device), TypeError.
#[pyclass(frozen, name = "Engine", module = "bertrt._bertrt")]
pub struct PyEngine {
    engine: Engine,
    opts: LoadOptions,
}

/// One string or a list of strings; `single` says which, to shape the result.
struct Texts {
    items: Vec<String>,
    single: bool,
}

fn texts(arg: &Bound<'_, PyAny>, name: &str) -> PyResult<Texts> {
    if let Ok(s) = arg.cast::<PyString>() {
        return Ok(Texts {
            items: vec![s.to_cow()?.into_owned()],
            single: true,
        });
    }
    let bad = || {
        PyTypeError::new_err(format!(
            "{name}: expected a str or a list of str, got {}",
            arg.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into())
        ))
    };
    if !(arg.is_instance_of::<PyList>() || arg.is_instance_of::<PyTuple>()) {
        return Err(bad());
    }
    let mut items = Vec::new();
    for (i, x) in arg.try_iter()?.enumerate() {
        let x = x?;
        let s = x.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{name}[{i}]: expected str, got {}",
                x.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "?".into())
            ))
        })?;
        items.push(s.to_cow()?.into_owned());
    }
    Ok(Texts {
        items,
        single: false,
    })
}

fn at_least_one(name: &str, n: i64) -> PyResult<usize> {
    if n < 1 {
        return Err(PyValueError::new_err(format!(
            "{name} must be at least 1, got {n}"
        )));
    }
    Ok(n as usize)
}

fn truncation(truncate: bool) -> Truncation {
    if truncate {
        Truncation::LongestFirst
    } else {
        Truncation::Error
    }
}

fn warn(py: Python<'_>, msg: &str) -> PyResult<()> {
    let warnings = py.import("warnings")?;
    let category = py.get_type::<pyo3::exceptions::PyUserWarning>();
    warnings.call_method1("warn", (msg, category, 2))?;
    Ok(())
}

/// One result per input; a single input's result unwrapped.
fn one_or_list(py: Python<'_>, single: bool, items: Vec<Py<PyAny>>) -> PyResult<Py<PyAny>> {
    if single {
        return Ok(items.into_iter().next().unwrap_or_else(|| py.None()));
    }
    Ok(PyList::new(py, items)?.into_any().unbind())
}

impl PyEngine {
    /// Runs `f` without the GIL (the engine runs its CPU work on its own
    /// thread pool, `threads=`).
    fn run<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&Engine) -> T + Send) -> T {
        py.detach(|| f(&self.engine))
    }
}

#[pymethods]
impl PyEngine {
    /// Loads a model: a folder, or a hub id found in the HF cache (the CLI's
    /// `--model`). `device`: "auto", "cpu", "cuda" or "cuda:N". `dtype`: None
    /// (the device's default), "f32" or "bf16" on the CPU, "f16" on CUDA.
    /// `threads`: CPU threads for this engine (None: one per logical CPU).
    /// The CLI's --device/--dtype/--threads, as the same `LoadOptions`.
    #[new]
    #[pyo3(signature = (model, device = "auto", dtype = None, threads = None))]
    fn new(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        device: &str,
        dtype: Option<&str>,
        threads: Option<i64>,
    ) -> PyResult<PyEngine> {
        let model: String = if let Ok(s) = model.cast::<PyString>() {
            s.to_cow()?.into_owned()
        } else if let Ok(p) = model.call_method0("__fspath__") {
            p.extract()?
        } else {
            return Err(PyTypeError::new_err(format!(
                "model: expected a str or os.PathLike, got {}",
                model.get_type().name()?
            )));
        };
        let opts = LoadOptions {
            device: device
                .parse()
                .map_err(|e: bertrt::Error| PyValueError::new_err(format!("device: {e}")))?,
            dtype: dtype
                .map(|d| d.parse::<Dtype>())
                .transpose()
                .map_err(|e| PyValueError::new_err(e.to_string()))?,
            threads: threads.map(|n| at_least_one("threads", n)).transpose()?,
            ..Default::default()
        };
        opts.validate().map_err(to_py)?;
        let engine = py.detach(|| {
            let dir = bertrt::hub::resolve_model(&model).map_err(|e| (e, None))?;
            Engine::load_dir_with(&dir, &opts).map_err(|e| (e, Some(dir.clone())))
        });
        let engine = engine.map_err(|(e, dir)| load_to_py(e, &model, dir.as_deref()))?;
        for w in &engine.warnings {
            warn(py, w)?;
        }
        Ok(PyEngine { engine, opts })
    }

    /// The model folder the engine was loaded from.
    #[getter]
    fn model_dir(&self) -> String {
        self.engine.dir.display().to_string()
    }

    /// Where it runs, e.g. "cpu (f32, 8 threads)".
    #[getter]
    fn backend(&self) -> String {
        self.engine.backend_name()
    }

    /// The dtype asked for (None: the device's default).
    #[getter]
    fn dtype(&self) -> Option<String> {
        self.opts.dtype.map(|d| d.to_string())
    }

    /// The thread count asked for (None: one per logical CPU).
    #[getter]
    fn threads(&self) -> Option<usize> {
        self.opts.threads
    }

    /// What the engine warned about at load (unused tensors, device fallback).
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.engine.warnings.clone()
    }

    /// config.json's architecture, e.g. "BertForMaskedLM".
    #[getter]
    fn architecture(&self) -> String {
        self.engine.config.architecture.clone()
    }

    /// The width of the hidden states (and of pooled embeddings).
    #[getter]
    fn hidden_size(&self) -> usize {
        self.engine.config.hidden_size
    }

    /// The token limit of embed with the model's defaults: the folder's
    /// sentence-transformers max_seq_length, else the model's own limit.
    #[getter]
    fn max_seq_length(&self) -> PyResult<usize> {
        let opts = embed::EmbedOptions::from_model_dir(&self.engine.dir).map_err(to_py)?;
        let model_max = self.engine.config.max_tokens_per_sequence();
        Ok(opts.max_seq_length.unwrap_or(model_max).min(model_max))
    }

    fn __repr__(&self) -> String {
        format!(
            "Engine(model_dir={:?}, architecture={:?}, backend={:?})",
            self.model_dir(),
            self.engine.config.architecture,
            self.backend()
        )
    }

    /// Sentence embeddings as float32 numpy: `[n, dim]` for a list, `[dim]`
    /// for one string; with pooling="none" a list of `[tokens, dim]` arrays
    /// (one array for one string). Defaults come from the folder's
    /// sentence-transformers files (pooling, Normalize, max_seq_length), as
    /// `bertrt embed`. `normalize=True` adds L2 normalisation (the CLI's
    /// `--normalize`); `truncate=False` refuses over-long inputs (ValueError)
    /// instead of cutting them (with a warning, unless `warn_truncated=False`).
    #[pyo3(signature = (texts, *, pooling = None, normalize = false, truncate = true, batch_size = 32, warn_truncated = true))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn embed(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        pooling: Option<&str>,
        normalize: bool,
        truncate: bool,
        batch_size: i64,
        warn_truncated: bool,
    ) -> PyResult<Py<PyAny>> {
        let t = self::texts(texts, "texts")?;
        let batch_size = at_least_one("batch_size", batch_size)?;
        let mut opts = embed::EmbedOptions::from_model_dir(&self.engine.dir).map_err(to_py)?;
        if let Some(p) = pooling {
            opts.pooling = p
                .parse()
                .map_err(|e: bertrt::Error| PyValueError::new_err(format!("pooling: {e}")))?;
        }
        opts.normalize |= normalize;
        opts.truncation = truncation(truncate);
        let res = self.run(py, |e| {
            let refs: Vec<&str> = t.items.iter().map(String::as_str).collect();
            let mut embs = Vec::with_capacity(refs.len());
            let mut truncated = Vec::new();
            for (b, chunk) in refs.chunks(batch_size).enumerate() {
                let out = embed::embed_reporting(e, chunk, &opts).map_err(|err| match err {
                    // Name the input by its index in the whole list.
                    bertrt::Error::Input(m) if b > 0 => bertrt::Error::Input(format!(
                        "batch starting at input {}: {m}",
                        b * batch_size
                    )),
                    other => other,
                })?;
                truncated.extend(out.truncated.iter().map(|(i, n)| (b * batch_size + i, *n)));
                embs.extend(out.embeddings);
            }
            Ok::<_, bertrt::Error>((embs, truncated))
        });
        let (embs, truncated) = res.map_err(to_py)?;
        if warn_truncated {
            for (i, n) in truncated {
                warn(
                    py,
                    &format!("input {i} truncated by {n} tokens to fit the model (truncate=False refuses instead)"),
                )?;
            }
        }
        let arr = embeddings_to_numpy(py, embs, self.engine.config.hidden_size)?;
        if !t.single {
            return Ok(arr);
        }
        if opts.pooling == embed::Pooling::None {
            return Ok(arr.bind(py).get_item(0)?.unbind());
        }
        first_row(py, arr)
    }

    /// The HF fill-mask pipeline: for one string with one mask, a list of
    /// `{score, token, token_str, sequence}` best first; with several masks,
    /// one such list per mask. A list of strings gives one result per string.
    #[pyo3(signature = (text, *, top_k = 5))]
    fn fill_mask(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        top_k: i64,
    ) -> PyResult<Py<PyAny>> {
        let t = texts(text, "text")?;
        let k = at_least_one("top_k", top_k)?;
        let res = self.run(py, |e| {
            t.items
                .iter()
                .map(|s| fill_mask::fill_mask(e, s, k))
                .collect::<bertrt::Result<Vec<_>>>()
        });
        let res = res.map_err(to_py)?;
        let items = res
            .iter()
            .map(|masks| match masks.as_slice() {
                // As HF: one mask's list unwrapped.
                [one] => to_python(py, one),
                _ => to_python(py, masks),
            })
            .collect::<PyResult<Vec<_>>>()?;
        one_or_list(py, t.single, items)
    }

    /// The HF question-answering pipeline (fast-tokenizer path): `question`
    /// and `context` are both strings, or lists of equal length. Each item
    /// gives `{score, start, end, answer}` when top_k is 1, else a list of
    /// them best first. Defaults as HF: max_seq_len = min(384, the
    /// tokenizer's model_max_length), doc_stride = min(max_seq_len / 2, 128).
    #[pyo3(signature = (question, context, *, top_k = 1, doc_stride = None, max_answer_len = 15, max_seq_len = None, max_question_len = 64, handle_impossible_answer = false, align_to_words = true))]
    #[allow(clippy::too_many_arguments)]
    fn question_answering(
        &self,
        py: Python<'_>,
        question: &Bound<'_, PyAny>,
        context: &Bound<'_, PyAny>,
        top_k: i64,
        doc_stride: Option<i64>,
        max_answer_len: i64,
        max_seq_len: Option<i64>,
        max_question_len: i64,
        handle_impossible_answer: bool,
        align_to_words: bool,
    ) -> PyResult<Py<PyAny>> {
        let q = texts(question, "question")?;
        let c = texts(context, "context")?;
        if q.single != c.single || q.items.len() != c.items.len() {
            return Err(PyValueError::new_err(format!(
                "question and context: give two strings or two lists of equal length (got {} and {})",
                if q.single { "a str".to_string() } else { format!("a list of {}", q.items.len()) },
                if c.single { "a str".to_string() } else { format!("a list of {}", c.items.len()) },
            )));
        }
        let defaults = qa::QaOptions::hf_defaults(&self.engine);
        let max_seq_len = match max_seq_len {
            Some(n) => at_least_one("max_seq_len", n)?,
            None => defaults.max_seq_len,
        };
        let opts = qa::QaOptions {
            top_k: at_least_one("top_k", top_k)?,
            doc_stride: match doc_stride {
                Some(n) => at_least_one("doc_stride", n)?,
                None => qa::default_doc_stride(max_seq_len),
            },
            max_answer_len: at_least_one("max_answer_len", max_answer_len)?,
            max_seq_len,
            max_question_len: at_least_one("max_question_len", max_question_len)?,
            handle_impossible_answer,
            align_to_words,
        };
        let res = self.run(py, |e| {
            let items: Vec<(&str, &str)> = q
                .items
                .iter()
                .zip(&c.items)
                .map(|(q, c)| (q.as_str(), c.as_str()))
                .collect();
            let mut out = Vec::with_capacity(items.len());
            for chunk in items.chunks(BATCH) {
                out.extend(qa::qa_many(e, chunk, &opts)?);
            }
            Ok::<_, bertrt::Error>(out)
        });
        let res = res.map_err(to_py)?;
        let items = res
            .iter()
            .map(|answers| match answers.as_slice() {
                [one] if opts.top_k == 1 => to_python(py, one),
                _ => to_python(py, answers),
            })
            .collect::<PyResult<Vec<_>>>()?;
        one_or_list(py, q.single, items)
    }

    /// The HF token-classification pipeline: aggregation_strategy "none"
    /// gives `{entity, score, index, word, start, end}` per token, "simple"
    /// `{entity_group, score, word, start, end}` per entity; labels in
    /// `ignore_labels` (default ["O"]) are left out.
    #[pyo3(signature = (text, *, aggregation_strategy = "none", ignore_labels = None))]
    fn token_classification(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        aggregation_strategy: &str,
        ignore_labels: Option<Vec<String>>,
    ) -> PyResult<Py<PyAny>> {
        let t = texts(text, "text")?;
        let simple = match aggregation_strategy {
            "none" => false,
            "simple" => true,
            other => {
                return Err(PyValueError::new_err(format!(
                    "aggregation_strategy '{other}': use none or simple"
                )))
            }
        };
        let ignore = ignore_labels.unwrap_or_else(|| vec!["O".to_string()]);
        let res = self.run(py, |e| {
            let ignore: Vec<&str> = ignore.iter().map(String::as_str).collect();
            t.items
                .iter()
                .map(|s| {
                    Ok(if simple {
                        serde_json::to_value(classify::classify_entities(e, s, &ignore)?)
                    } else {
                        serde_json::to_value(classify::classify_tokens(e, s, &ignore)?)
                    })
                })
                .collect::<bertrt::Result<Vec<_>>>()
        });
        let items = res
            .map_err(to_py)?
            .into_iter()
            .map(|v| {
                v.map_err(|e| {
                    pyo3::exceptions::PyRuntimeError::new_err(format!(
                        "internal error serialising a result: {e}"
                    ))
                })
                .and_then(|v| to_python(py, &v))
            })
            .collect::<PyResult<Vec<_>>>()?;
        one_or_list(py, t.single, items)
    }

    /// The HF text-classification pipeline with top_k=None: every label's
    /// `{label, score}`, best first (softmax; sigmoid for multi-label and
    /// single-logit models; raw for regression). `top_k` keeps the best k.
    #[pyo3(signature = (text, *, text_pair = None, top_k = None))]
    fn classify(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        text_pair: Option<&Bound<'_, PyAny>>,
        top_k: Option<i64>,
    ) -> PyResult<Py<PyAny>> {
        let t = texts(text, "text")?;
        let pairs: Vec<Option<String>> = match text_pair {
            None => vec![None; t.items.len()],
            Some(p) => {
                let p = texts(p, "text_pair")?;
                if p.single != t.single || p.items.len() != t.items.len() {
                    return Err(PyValueError::new_err(
                        "text_pair: give one per text (a str with a str, a list of equal length with a list)",
                    ));
                }
                p.items.into_iter().map(Some).collect()
            }
        };
        let k = top_k.map(|k| at_least_one("top_k", k)).transpose()?;
        let res = self.run(py, |e| {
            t.items
                .iter()
                .zip(&pairs)
                .map(|(s, p)| classify::classify(e, s, p.as_deref()))
                .collect::<bertrt::Result<Vec<_>>>()
        });
        let items = res
            .map_err(to_py)?
            .into_iter()
            .map(|mut labels| {
                if let Some(k) = k {
                    labels.truncate(k);
                }
                to_python(py, &labels)
            })
            .collect::<PyResult<Vec<_>>>()?;
        one_or_list(py, t.single, items)
    }

    /// ELECTRA replaced-token detection (no HF pipeline): the CLI's records
    /// `{index, token, start, end, logit, probability}`, one per non-special
    /// token.
    fn detect(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let t = texts(text, "text")?;
        let res = self.run(py, |e| {
            t.items
                .iter()
                .map(|s| detect::detect(e, s))
                .collect::<bertrt::Result<Vec<_>>>()
        });
        let items = res
            .map_err(to_py)?
            .iter()
            .map(|r| to_python(py, r))
            .collect::<PyResult<Vec<_>>>()?;
        one_or_list(py, t.single, items)
    }

    /// The tokenizer's output for `text` (and `pair`), as HF's tokenizer
    /// call with offsets: `{tokens, input_ids, token_type_ids,
    /// attention_mask, offsets}` with offsets as (start, end) character
    /// tuples, special tokens (0, 0). Cut to the model's limit (with a
    /// warning) unless `truncate=False`, which raises ValueError instead.
    #[pyo3(signature = (text, pair = None, *, truncate = true))]
    fn tokenize(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        pair: Option<&Bound<'_, PyAny>>,
        truncate: bool,
    ) -> PyResult<Py<PyAny>> {
        let text: String = text
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("text: expected a str"))?
            .to_cow()?
            .into_owned();
        let pair: Option<String> = match pair {
            None => None,
            Some(p) => Some(
                p.cast::<PyString>()
                    .map_err(|_| PyTypeError::new_err("pair: expected a str or None"))?
                    .to_cow()?
                    .into_owned(),
            ),
        };
        let limit = self.engine.config.max_tokens_per_sequence();
        let enc = self
            .run(py, |e| {
                e.tokenizer
                    .encode(&text, pair.as_deref(), limit, truncation(truncate))
            })
            .map_err(to_py)?;
        if enc.truncated_tokens > 0 {
            warn(
                py,
                &format!(
                    "input truncated by {} tokens to {limit}",
                    enc.truncated_tokens
                ),
            )?;
        }
        let t = Tokenized::from(enc);
        let d = PyDict::new(py);
        d.set_item("tokens", t.tokens)?;
        d.set_item("input_ids", t.input_ids)?;
        d.set_item("token_type_ids", t.token_type_ids)?;
        d.set_item("attention_mask", t.attention_mask)?;
        d.set_item("offsets", t.offsets)?;
        Ok(d.into_any().unbind())
    }
}
