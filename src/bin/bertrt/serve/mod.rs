//! `bertrt serve`: a TEI-compatible HTTP server in front of the library's
//! dynamic batcher. This module holds the command line, start-up, the
//! middleware (request ids, API key, concurrency limit, logs, counters) and
//! graceful shutdown; the routes live in `routes.rs`, `embed_routes.rs`,
//! `task_routes.rs` and `openai.rs`.

mod embed_routes;
mod error;
mod metrics;
mod openai;
mod routes;
mod task_routes;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bertrt::batch::SequenceIds;
use bertrt::batcher::{Batcher, BatcherConfig, ForwardHook};
use bertrt::tasks::embed::{prompts_from_model_dir, EmbedOptions, Prompts};
use bertrt::Engine;
use error::ApiError;
use metrics::{Metrics, Work};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(clap::Args, Clone)]
pub struct ServeArgs {
    /// Model folder, or a hub id found in the HF cache.
    #[arg(long, short = 'm')]
    model: String,
    #[command(flatten)]
    engine: crate::args::EngineArgs,
    /// Address to listen on (loopback by default).
    #[arg(long, alias = "hostname", default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Most tokens packed into one forward.
    #[arg(long, default_value_t = 16384)]
    max_batch_tokens: usize,
    /// Most requests packed into one forward [default: no limit but tokens].
    #[arg(long)]
    max_batch_requests: Option<usize>,
    /// Most inputs in one request (413 beyond).
    #[arg(long, default_value_t = 32)]
    max_client_batch_size: usize,
    /// Requests handled at once (429 beyond).
    #[arg(long, default_value_t = 512)]
    max_concurrent_requests: usize,
    /// Truncate over-long inputs (true) or refuse them with 413 (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_truncate: bool,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long)]
    api_key: Option<String>,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 2_000_000)]
    payload_limit: usize,
    /// Logs as JSON lines instead of text.
    #[arg(long)]
    json_logs: bool,
    /// Seconds a request may take before it is answered 408.
    #[arg(long, default_value_t = 60)]
    request_timeout: u64,
}

/// Everything the handlers share.
pub struct AppState {
    pub batcher: Batcher,
    pub engine: Arc<Engine>,
    pub model_id: String,
    /// The number format asked for, or the device's default.
    pub dtype: String,
    pub embed_defaults: EmbedOptions,
    pub max_client_batch_size: usize,
    pub max_concurrent_requests: usize,
    pub auto_truncate: bool,
    /// The folder's sentence-transformers prompts.
    pub prompts: Prompts,
    pub metrics: Arc<Metrics>,
    pub request_timeout: Duration,
    api_key: Option<String>,
    slots: Arc<Semaphore>,
    next_request_id: AtomicU64,
}

impl AppState {
    /// The token limit per input: the sentence-transformers max_seq_length
    /// where the folder has one, else the model's.
    pub fn max_input_length(&self) -> usize {
        let model = self.engine.config.max_tokens_per_sequence();
        self.embed_defaults
            .max_seq_length
            .map_or(model, |m| m.min(model))
    }

    /// HTTP requests holding a concurrency slot (the asking one included).
    pub fn requests_in_flight(&self) -> usize {
        self.max_concurrent_requests - self.slots.available_permits()
    }
}

/// Test-only fault switches: a forward whose batch holds exactly the tokens
/// of the text in the first panics (only that batch must fail); one holding
/// the text in the second sleeps 3 s first (to see the request timeout).
const FAULT_ENV: &str = "BERTRT_SERVE_PANIC_ON_TEXT";
const SLOW_ENV: &str = "BERTRT_SERVE_SLOW_ON_TEXT";

pub fn run(a: ServeArgs) -> Result<(), String> {
    init_logs(a.json_logs);
    let options = a.engine.options()?;
    for (flag, v) in [
        ("--max-batch-tokens", a.max_batch_tokens),
        ("--max-client-batch-size", a.max_client_batch_size),
        ("--max-concurrent-requests", a.max_concurrent_requests),
        ("--max-batch-requests", a.max_batch_requests.unwrap_or(1)),
        ("--request-timeout", a.request_timeout as usize),
    ] {
        if v == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
    }
    let engine =
        Arc::new(Engine::load_with(&a.model, &options).map_err(|e| format!("--model: {e}"))?);
    for w in &engine.warnings {
        tracing::warn!("{w}");
    }
    let embed_defaults = EmbedOptions::from_model_dir(&engine.dir).map_err(|e| e.to_string())?;
    let prompts = prompts_from_model_dir(&engine.dir).map_err(|e| e.to_string())?;
    let before_forward = fault_hook(&engine)?;
    let metrics = Arc::new(Metrics::new());
    let m = metrics.clone();
    let batcher = Batcher::new(
        engine.clone(),
        BatcherConfig {
            max_batch_tokens: a.max_batch_tokens,
            max_batch_requests: a.max_batch_requests.unwrap_or(usize::MAX),
            before_forward,
            after_forward: Some(Arc::new(move |b| m.observe_batch(b))),
        },
    )
    .map_err(|e| e.to_string())?;
    // The warm-up forward: /health answers only once the server listens,
    // which is after this.
    let warm = engine
        .tokenizer
        .encode(
            "warm up",
            None,
            512,
            bertrt::tokenize::Truncation::LongestFirst,
        )
        .map_err(|e| format!("warm-up: {e}"))?;
    batcher
        .run(vec![SequenceIds {
            input_ids: warm.ids,
            token_type_ids: warm.type_ids,
        }])
        .map_err(|e| format!("warm-up forward: {e}"))?;
    let state = Arc::new(AppState {
        batcher,
        model_id: a.model.clone(),
        dtype: match options.dtype {
            Some(d) => d.to_string(),
            None if engine.backend_name().to_lowercase().contains("cuda") => "f16".into(),
            None => "f32".into(),
        },
        embed_defaults,
        max_client_batch_size: a.max_client_batch_size,
        max_concurrent_requests: a.max_concurrent_requests,
        auto_truncate: a.auto_truncate,
        prompts,
        metrics,
        request_timeout: Duration::from_secs(a.request_timeout),
        api_key: a.api_key.clone(),
        slots: Arc::new(Semaphore::new(a.max_concurrent_requests)),
        next_request_id: AtomicU64::new(1),
        engine,
    });
    let app = routes::router(state.clone())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .layer(axum::extract::DefaultBodyLimit::max(a.payload_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("--host/--port {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(
            "serving {} ({}) on http://{local}",
            state.model_id,
            state.engine.backend_name()
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| format!("server: {e}"))?;
        tracing::info!("shut down cleanly");
        Ok::<(), String>(())
    })?;
    // Dropping the state drops the batcher, which finishes its queue.
    Ok(())
}

fn init_logs(json: bool) {
    let b = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO);
    if json {
        b.json().init()
    } else {
        b.with_ansi(false).init()
    }
}

fn fault_hook(engine: &Engine) -> Result<Option<ForwardHook>, String> {
    let trigger = |env: &str| -> Result<Option<Vec<u32>>, String> {
        let Ok(text) = std::env::var(env) else {
            return Ok(None);
        };
        tracing::warn!("{env} is set to {text:?} (a test switch)");
        let e = engine
            .tokenizer
            .encode(
                &text,
                None,
                usize::MAX,
                bertrt::tokenize::Truncation::LongestFirst,
            )
            .map_err(|e| format!("{env}: {e}"))?;
        Ok(Some(e.ids))
    };
    let (panic_ids, slow_ids) = (trigger(FAULT_ENV)?, trigger(SLOW_ENV)?);
    if panic_ids.is_none() && slow_ids.is_none() {
        return Ok(None);
    }
    Ok(Some(Arc::new(move |seqs: &[SequenceIds]| {
        let holds = |ids: &Option<Vec<u32>>| {
            ids.as_ref()
                .is_some_and(|ids| seqs.iter().any(|s| &s.input_ids == ids))
        };
        if holds(&slow_ids) {
            std::thread::sleep(Duration::from_secs(3));
        }
        if holds(&panic_ids) {
            panic!("{FAULT_ENV} trigger");
        }
    })))
}

/// Resolves on SIGTERM or SIGINT; axum then stops accepting and lets the
/// accepted requests finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("signal received: finishing accepted requests, accepting no more");
}

/// Equal-length-independent, data-independent comparison of a key.
fn keys_match(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, &e) in expected.iter().enumerate() {
        diff |= (e ^ given.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

/// Every request passes here: id, API key, concurrency slot, a JSON body
/// for every error, log line, metrics.
async fn gate(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let id = s.next_request_id.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let route = routes::route_label(&path);
    let method = req.method().clone();
    let openai = routes::is_openai_route(&path);
    let started = Instant::now();
    let shaped = |e: ApiError| if openai { e.openai() } else { e };
    let response = if let Some(r) = refuse(&s, &req, &path) {
        shaped(r).into_response()
    } else {
        match s.slots.clone().try_acquire_owned() {
            Ok(_permit) => next.run(req).await,
            Err(_) => shaped(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "model is overloaded: {} requests in flight (--max-concurrent-requests)",
                    s.max_concurrent_requests
                ),
            ))
            .into_response(),
        }
    };
    let mut response = json_error_body(response, |status| {
        let message = match status {
            StatusCode::METHOD_NOT_ALLOWED => format!("{method} is not allowed on {path}"),
            StatusCode::REQUEST_TIMEOUT => format!(
                "the request took longer than {} s (--request-timeout)",
                s.request_timeout.as_secs()
            ),
            other => other
                .canonical_reason()
                .unwrap_or("request failed")
                .to_string(),
        };
        shaped(ApiError::new(status, message))
    });
    let status = response.status().as_u16();
    let took = started.elapsed();
    let work = response
        .extensions()
        .get::<Work>()
        .copied()
        .unwrap_or_default();
    if let Ok(v) = axum::http::HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(
        request_id = id,
        %method,
        route = %path,
        status,
        tokens = work.tokens,
        queue_ms = work.queue_time.as_secs_f64() * 1e3,
        compute_ms = work.compute_time.as_secs_f64() * 1e3,
        ms = took.as_secs_f64() * 1e3,
        "request"
    );
    s.metrics.observe_request(route, status, took);
    if work.tokens > 0 {
        s.metrics.observe_queue_time(work.queue_time);
    }
    response
}

/// Errors made outside the handlers (axum's 405, the timeout layer's 408)
/// come with no JSON body: give them one.
fn json_error_body(r: Response, error: impl FnOnce(StatusCode) -> ApiError) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let mut fixed = error(status).into_response();
    // Keep headers such as `Allow` on a 405.
    for (k, v) in r.headers() {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            fixed.headers_mut().insert(k.clone(), v.clone());
        }
    }
    fixed
}

fn refuse(s: &AppState, req: &Request, route: &str) -> Option<ApiError> {
    let key = s.api_key.as_ref()?;
    if route == "/health" {
        return None;
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if keys_match(given.as_bytes(), key.as_bytes()) {
        None
    } else {
        Some(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key: send `Authorization: Bearer KEY`",
        ))
    }
}
