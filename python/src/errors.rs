//! bertrt errors as Python exceptions, carrying the engine's message:
//! ValueError for bad values (inputs, model files that are there but wrong),
//! FileNotFoundError for a missing model folder or file, RuntimeError for the
//! device and for bertrt's own bugs.

use bertrt::Error;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;
use std::path::Path;

/// An error from a task call.
pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        Error::Io { .. } => PyOSError::new_err(msg),
        Error::Device(_) | Error::Internal(_) => PyRuntimeError::new_err(msg),
        Error::Config { .. }
        | Error::Unsupported(_)
        | Error::Weights { .. }
        | Error::Tensor { .. }
        | Error::Tokenizer(_)
        | Error::Input(_) => PyValueError::new_err(msg),
    }
}

/// An error from loading `model` (resolved to `dir` when that got so far):
/// the library reports a missing folder as bad input and a missing
/// config/weights/tokenizer file as a bad model folder; here both are
/// FileNotFoundError, which is what a Python caller checks for.
pub fn load_to_py(e: Error, model: &str, dir: Option<&Path>) -> PyErr {
    let missing = match (&e, dir) {
        // Not a folder, and no hub snapshot for the id either.
        (Error::Input(_), None) => !Path::new(model).exists(),
        // config.json (or a shard) named by path and absent.
        (Error::Config { path, .. } | Error::Weights { path, .. }, _) if !path.exists() => true,
        // No weights file of any known name: the error names the folder.
        (Error::Weights { path, .. }, Some(d)) => path == d,
        (Error::Tokenizer(msg), _) => msg.contains("no tokenizer files"),
        _ => false,
    };
    if missing {
        PyFileNotFoundError::new_err(e.to_string())
    } else {
        to_py(e)
    }
}
