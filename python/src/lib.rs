//! `bertrt._bertrt`: the native half of the Python package. [`engine::PyEngine`]
//! wraps a `bertrt::Engine`; every task calls the library's own function (the
//! ones the CLI calls) with the GIL released, and results become the same
//! dicts the CLI prints as JSON (`results`).

mod engine;
mod errors;
mod results;

use pyo3::prelude::*;

#[pymodule]
fn _bertrt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::PyEngine>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
