//! Task results as Python objects. Every result goes through the same serde
//! serialisation the CLI prints (`--format json`), so the dicts have the CLI's
//! keys and values; only the embeddings become numpy arrays.

use bertrt::tasks::embed::Embedding;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde::Serialize;
use serde_json::Value;

/// `v` as the CLI would print it, then as Python dicts, lists and scalars.
pub fn to_python<T: Serialize + ?Sized>(py: Python<'_>, v: &T) -> PyResult<Py<PyAny>> {
    let json = serde_json::to_value(v).map_err(|e| {
        PyRuntimeError::new_err(format!("internal error serialising a result: {e}"))
    })?;
    json_to_python(py, &json)
}

fn json_to_python(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.into_pyobject(py)?.into_any().unbind(),
            (None, Some(i), _) => i.into_pyobject(py)?.into_any().unbind(),
            (None, None, Some(f)) => f.into_pyobject(py)?.into_any().unbind(),
            _ => unreachable!("a JSON number is u64, i64 or f64"),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any().unbind(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for x in items {
                list.append(json_to_python(py, x)?)?;
            }
            list.into_any().unbind()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, x) in map {
                dict.set_item(k, json_to_python(py, x)?)?;
            }
            dict.into_any().unbind()
        }
    })
}

/// Pooled vectors as one float32 array `[n, dim]` (`dim` given so that no
/// input still has a shape), or per-token matrices as a list of `[tokens, dim]`.
pub fn embeddings_to_numpy(
    py: Python<'_>,
    embs: Vec<Embedding>,
    dim: usize,
) -> PyResult<Py<PyAny>> {
    let tokens = matches!(embs.first(), Some(Embedding::Tokens(_)));
    if tokens {
        let list = PyList::empty(py);
        for e in embs {
            let Embedding::Tokens(rows) = e else {
                return Err(PyRuntimeError::new_err(
                    "internal error: mixed embedding kinds",
                ));
            };
            list.append(matrix(py, rows.len(), dim, rows.concat())?)?;
        }
        return Ok(list.into_any().unbind());
    }
    let n = embs.len();
    let mut flat = Vec::with_capacity(n * dim);
    for e in embs {
        let Embedding::Vector(v) = e else {
            return Err(PyRuntimeError::new_err(
                "internal error: mixed embedding kinds",
            ));
        };
        flat.extend(v);
    }
    matrix(py, n, dim, flat)
}

fn matrix(py: Python<'_>, rows: usize, cols: usize, data: Vec<f32>) -> PyResult<Py<PyAny>> {
    let a = Array2::from_shape_vec((rows, cols), data)
        .map_err(|e| PyRuntimeError::new_err(format!("internal error shaping embeddings: {e}")))?;
    Ok(a.into_pyarray(py).into_any().unbind())
}

/// Row `i` of a 2-D result as a 1-D array (a single string's embedding).
pub fn first_row(py: Python<'_>, arr: Py<PyAny>) -> PyResult<Py<PyAny>> {
    let row = arr.bind(py).get_item(0)?;
    // A copy, so the 1-D result owns its memory like any fresh array.
    let row = row.cast_into::<PyArray1<f32>>()?;
    Ok(row.call_method0("copy")?.unbind())
}
