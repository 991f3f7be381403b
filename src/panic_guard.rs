//! Running third-party parsers that may panic on bad input (tokenizers 0.22.2
//! `expect`s inside its deserializers) without taking the process down.
//!
//! The panic hook is process-wide, so it is not swapped around each call
//! (another thread's unrelated panic could then go unreported, and two callers
//! could restore each other's hook). Instead one wrapping hook is installed
//! once; it stays quiet only on a thread that is inside [`catch_quietly`] and
//! records that panic's message for the error, and hands every other panic to
//! the hook that was there before.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many [`catch_quietly`] calls this thread is inside.
    static QUIET_DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The message and location of the last panic caught quietly here.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// A panic's message and where it happened: "msg at file:line".
pub fn describe(info: &std::panic::PanicHookInfo) -> String {
    let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    };
    let at = info
        .location()
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    format!("{msg}{at}")
}

fn install_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET_DEPTH.with(|d| d.get()) == 0 {
                return previous(info);
            }
            CAUGHT.with(|c| *c.borrow_mut() = Some(describe(info)));
        }));
    });
}

/// Runs `f`; a panic inside it becomes `Err(description)` (its message and
/// where it happened) instead of unwinding, and prints nothing.
///
/// Only for calls into code we do not own: a panic in our own code is a bug
/// to fix where it happens, not to hide here.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_hook();
    QUIET_DEPTH.with(|d| d.set(d.get() + 1));
    CAUGHT.with(|c| c.borrow_mut().take());
    // The closure's captures are dropped or abandoned with it on a panic; the
    // callers pass only inputs they do not use again after an error.
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET_DEPTH.with(|d| d.set(d.get() - 1));
    result.map_err(|_| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| "panicked".to_string())
    })
}
