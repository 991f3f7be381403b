//! Dynamic batching for one engine, usable in-process or behind `bertrt serve`.
//!
//! Callers submit tokenized requests (one or more sequences each); a worker
//! thread packs whatever is waiting, up to a token and a request budget, into
//! one padding-free [`Batch`], runs one forward at a time, and hands each
//! request back the outputs of its own sequences. Each request is validated
//! on its own before it joins a batch, so one request's bad input never fails
//! another; a panic inside a forward fails only that batch.

use crate::batch::{Batch, SequenceIds};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::{ForwardOutput, Want, Wanted};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Called with each packed batch just before its forward, inside the panic
/// guard; tests use it to inject faults.
pub type ForwardHook = Arc<dyn Fn(&[SequenceIds]) + Send + Sync>;

/// Called after each packed forward (metrics).
pub type BatchObserver = Arc<dyn Fn(&BatchReport) + Send + Sync>;

/// What one packed forward held and took.
#[derive(Debug, Clone, Copy)]
pub struct BatchReport {
    pub requests: usize,
    pub tokens: usize,
    pub forward_time: Duration,
    pub ok: bool,
}

#[derive(Clone)]
pub struct BatcherConfig {
    /// Most tokens in one forward (a single request may not exceed it).
    pub max_batch_tokens: usize,
    /// Most requests in one forward.
    pub max_batch_requests: usize,
    pub before_forward: Option<ForwardHook>,
    pub after_forward: Option<BatchObserver>,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_batch_tokens: 16384,
            max_batch_requests: usize::MAX,
            before_forward: None,
            after_forward: None,
        }
    }
}

/// One request's share of a forward: its sequences packed alone (so the
/// task helpers that take a batch and its output work unchanged) and the
/// matching slice of what it asked the forward for.
#[derive(Debug, Clone)]
pub struct RequestOutput {
    pub batch: Batch,
    pub output: Wanted,
    /// From submission to the start of its forward.
    pub queue_time: Duration,
    /// The whole packed forward this request was part of.
    pub forward_time: Duration,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatcherStats {
    pub batches: u64,
    pub requests: u64,
    pub tokens: u64,
    pub failed_batches: u64,
    /// Largest number of requests seen in one forward.
    pub max_requests_in_batch: u64,
}

type Reply = Box<dyn FnOnce(Result<RequestOutput>) + Send>;
type Exclusive = Box<dyn FnOnce(&Engine) + Send>;

enum Job {
    Seqs {
        seqs: Vec<SequenceIds>,
        own_batch: Batch,
        want: Want,
        reply: Reply,
        queued_at: Instant,
    },
    /// Work that needs the engine to itself (task helpers that run their own
    /// forwards); runs between batches, so forwards never overlap.
    Exclusive(Exclusive),
}

struct Queue {
    jobs: VecDeque<Job>,
    queued_tokens: usize,
    closing: bool,
    stats: BatcherStats,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

pub struct Batcher {
    engine: Arc<Engine>,
    shared: Arc<Shared>,
    config: BatcherConfig,
    worker: Option<JoinHandle<()>>,
}

impl Batcher {
    pub fn new(engine: Arc<Engine>, config: BatcherConfig) -> Result<Batcher> {
        if config.max_batch_tokens == 0 || config.max_batch_requests == 0 {
            return Err(Error::Input(
                "max_batch_tokens and max_batch_requests must be at least 1".into(),
            ));
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                queued_tokens: 0,
                closing: false,
                stats: BatcherStats::default(),
            }),
            wake: Condvar::new(),
        });
        let worker = {
            let (engine, shared, config) = (engine.clone(), shared.clone(), config.clone());
            std::thread::Builder::new()
                .name("bertrt-batcher".into())
                .spawn(move || worker_loop(&engine, &shared, &config))
                .map_err(|e| Error::Internal(format!("cannot start the batcher thread: {e}")))?
        };
        Ok(Batcher {
            engine,
            shared,
            config,
            worker: Some(worker),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    /// Validates `seqs` on their own and queues them for every output;
    /// `reply` is called once, from the worker thread, with this request's
    /// outputs or its error. Validation errors are returned here and never
    /// reach a batch.
    pub fn submit_with(&self, seqs: Vec<SequenceIds>, reply: Reply) -> Result<()> {
        self.submit_want(seqs, Want::Everything, reply)
    }

    /// [`Batcher::submit_with`] for only what `want` asks (token rows are the
    /// request's own, counted from its first token).
    pub fn submit_want(&self, seqs: Vec<SequenceIds>, want: Want, reply: Reply) -> Result<()> {
        if seqs.is_empty() {
            return Err(Error::Input("a request needs at least one sequence".into()));
        }
        let own_batch = Batch::pack(&seqs, &self.engine.config)?;
        if let Want::TokenLogitsAt(rows) = &want {
            crate::output::check_token_rows(rows, own_batch.num_tokens())?;
        }
        let tokens = own_batch.num_tokens();
        if tokens > self.config.max_batch_tokens {
            return Err(Error::Input(format!(
                "the request has {tokens} tokens; max_batch_tokens is {}",
                self.config.max_batch_tokens
            )));
        }
        let mut q = self.lock();
        if q.closing {
            return Err(Error::Internal("the batcher is shutting down".into()));
        }
        q.queued_tokens += tokens;
        q.jobs.push_back(Job::Seqs {
            seqs,
            own_batch,
            want,
            reply,
            queued_at: Instant::now(),
        });
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Blocking form of [`Batcher::submit_with`].
    pub fn run(&self, seqs: Vec<SequenceIds>) -> Result<RequestOutput> {
        self.run_want(seqs, Want::Everything)
    }

    /// Blocking form of [`Batcher::submit_want`].
    pub fn run_want(&self, seqs: Vec<SequenceIds>, want: Want) -> Result<RequestOutput> {
        let (tx, rx) = mpsc::channel();
        self.submit_want(
            seqs,
            want,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.recv()
            .map_err(|_| Error::Internal("the batcher dropped a request".into()))?
    }

    /// Runs `batch`'s sequences as one request (blocking), for every output.
    pub fn forward(&self, batch: &Batch) -> Result<ForwardOutput> {
        self.forward_want(batch, &Want::Everything)?
            .into_everything()
    }

    /// Runs `batch`'s sequences as one request (blocking) for only what
    /// `want` asks: a [`crate::tasks::RunForward`] for the task helpers, so
    /// their forwards share batches with other callers.
    pub fn forward_want(&self, batch: &Batch, want: &Want) -> Result<Wanted> {
        self.forward_timed(batch, want).map(|r| r.output)
    }

    /// [`Batcher::forward_want`] with the request's times.
    pub fn forward_timed(&self, batch: &Batch, want: &Want) -> Result<RequestOutput> {
        let (ids, types) = (batch.input_ids(), batch.token_type_ids());
        let seqs = (0..batch.num_seqs())
            .map(|s| {
                let r = batch.seq_range(s);
                SequenceIds {
                    input_ids: ids[r.clone()].to_vec(),
                    token_type_ids: types[r].to_vec(),
                }
            })
            .collect();
        self.run_want(seqs, want.clone())
    }

    /// Queues `work` to run alone on the engine between batches; `work`'s
    /// panics are caught and turned into an error for this caller only.
    pub fn submit_exclusive<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
        reply: impl FnOnce(Result<T>) + Send + 'static,
    ) -> Result<()> {
        let job: Exclusive = Box::new(move |engine: &Engine| {
            let r = catch_unwind(AssertUnwindSafe(|| work(engine)))
                .unwrap_or_else(|p| Err(panic_error(p.as_ref())));
            reply(r);
        });
        let mut q = self.lock();
        if q.closing {
            return Err(Error::Internal("the batcher is shutting down".into()));
        }
        q.jobs.push_back(Job::Exclusive(job));
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Blocking form of [`Batcher::submit_exclusive`].
    pub fn run_exclusive<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        self.submit_exclusive(work, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv()
            .map_err(|_| Error::Internal("the batcher dropped a request".into()))?
    }

    /// Requests waiting (not yet in a forward).
    pub fn queue_len(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Tokens in the waiting requests.
    pub fn queued_tokens(&self) -> usize {
        self.lock().queued_tokens
    }

    pub fn stats(&self) -> BatcherStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic never happens while the lock is held (forwards run outside
        // it), so a poisoned lock still holds consistent data.
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Batcher {
    /// Finishes every queued request, then stops the worker.
    fn drop(&mut self) {
        self.lock().closing = true;
        self.shared.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn panic_error(payload: &(dyn std::any::Any + Send)) -> Error {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::Internal(format!(
        "the forward panicked ({msg}); only this batch failed"
    ))
}

/// A request taken for a forward: its sequences, own batch, want, reply, and
/// when it was queued.
type Taken = (Vec<SequenceIds>, Batch, Want, Reply, Instant);

mod share;
use share::{merged_want, slice_wanted, token_rows, Share};

/// Whether requests wanting `a` and `b` can share one forward: the same
/// reduction (token rows of any requests merge).
fn shares_forward(a: &Want, b: &Want) -> bool {
    matches!((a, b), (Want::TokenLogitsAt(_), Want::TokenLogitsAt(_))) || a == b
}

enum Next {
    Batch(Vec<Taken>),
    Exclusive(Exclusive),
    Stop,
}

/// Takes the next unit of work: an exclusive job alone, or as many waiting
/// requests (in arrival order) as fit the budgets and want the same kind of
/// output as the first.
fn take_next(shared: &Shared, config: &BatcherConfig) -> Next {
    let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    while q.jobs.is_empty() {
        if q.closing {
            return Next::Stop;
        }
        q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
    }
    if matches!(q.jobs.front(), Some(Job::Exclusive(_))) {
        let Some(Job::Exclusive(work)) = q.jobs.pop_front() else {
            unreachable!("front was checked to be exclusive")
        };
        return Next::Exclusive(work);
    }
    let mut taken = Vec::new();
    let mut tokens = 0;
    while taken.len() < config.max_batch_requests {
        let fits = match (q.jobs.front(), taken.first()) {
            (Some(Job::Seqs { .. }), None) => true,
            (
                Some(Job::Seqs {
                    own_batch, want, ..
                }),
                Some((_, _, first, _, _)),
            ) => {
                tokens + own_batch.num_tokens() <= config.max_batch_tokens
                    && shares_forward(first, want)
            }
            _ => false,
        };
        if !fits {
            break;
        }
        let Some(Job::Seqs {
            seqs,
            own_batch,
            want,
            reply,
            queued_at,
        }) = q.jobs.pop_front()
        else {
            unreachable!("front was checked to be a request")
        };
        tokens += own_batch.num_tokens();
        taken.push((seqs, own_batch, want, reply, queued_at));
    }
    q.queued_tokens -= tokens;
    Next::Batch(taken)
}

fn worker_loop(engine: &Engine, shared: &Shared, config: &BatcherConfig) {
    loop {
        let requests = match take_next(shared, config) {
            Next::Stop => return,
            Next::Exclusive(work) => {
                work(engine);
                continue;
            }
            Next::Batch(r) => r,
        };
        let all: Vec<SequenceIds> = requests
            .iter()
            .flat_map(|(s, _, _, _, _)| s.iter().cloned())
            .collect();
        let want = merged_want(&requests);
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            if let Some(hook) = &config.before_forward {
                hook(&all);
            }
            // Each request was packed alone already, so this cannot fail on
            // its input; an error here is the engine's.
            let batch = Batch::pack(&all, &engine.config)?;
            engine.forward_want(&batch, &want)
        }))
        .unwrap_or_else(|p| Err(panic_error(p.as_ref())));
        let forward_time = started.elapsed();
        let batch_tokens: usize = requests.iter().map(|(_, b, _, _, _)| b.num_tokens()).sum();
        if let Some(observe) = &config.after_forward {
            observe(&BatchReport {
                requests: requests.len(),
                tokens: batch_tokens,
                forward_time,
                ok: result.is_ok(),
            });
        }
        {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            let s = &mut q.stats;
            s.batches += 1;
            s.requests += requests.len() as u64;
            s.tokens += batch_tokens as u64;
            s.max_requests_in_batch = s.max_requests_in_batch.max(requests.len() as u64);
            s.failed_batches += result.is_err() as u64;
        }
        match result {
            Ok(out) => {
                let total = Share {
                    seqs: 0..all.len(),
                    toks: 0..batch_tokens,
                    rows: 0..token_rows(&want),
                };
                let mut at = Share {
                    seqs: 0..0,
                    toks: 0..0,
                    rows: 0..0,
                };
                for (_, own_batch, own_want, reply, queued_at) in requests {
                    let next = |r: &std::ops::Range<usize>, n: usize| r.end..r.end + n;
                    at = Share {
                        seqs: next(&at.seqs, own_batch.num_seqs()),
                        toks: next(&at.toks, own_batch.num_tokens()),
                        rows: next(&at.rows, token_rows(&own_want)),
                    };
                    let output = slice_wanted(&out, &want, &total, &at);
                    reply(Ok(RequestOutput {
                        batch: own_batch,
                        output,
                        queue_time: started.saturating_duration_since(queued_at),
                        forward_time,
                    }));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, _, _, reply, _) in requests {
                    reply(Err(Error::Internal(format!("batch failed: {msg}"))));
                }
            }
        }
    }
}
