//! Python-side `AddedToken` model: what the slow tokenizer holds per special token.

use super::*;

// ---------------------------------------------------------------------------
// Python-side AddedToken model
// ---------------------------------------------------------------------------

/// A Python `tokenizers.AddedToken`: flags not given stay unset (`None`) and are
/// resolved when the Rust token is built (`normalized` then defaults to
/// `!special`, the others to false).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PyTok {
    pub(super) content: String,
    pub(super) single_word: Option<bool>,
    pub(super) lstrip: Option<bool>,
    pub(super) rstrip: Option<bool>,
    pub(super) normalized: Option<bool>,
    pub(super) special: bool,
}

impl PyTok {
    pub(super) fn new(content: &str) -> Self {
        PyTok {
            content: content.to_string(),
            single_word: None,
            lstrip: None,
            rstrip: None,
            normalized: None,
            special: false,
        }
    }

    pub(super) fn resolve(&self) -> AddedToken {
        let mut t = AddedToken::from(self.content.clone(), self.special);
        if let Some(v) = self.single_word {
            t = t.single_word(v);
        }
        if let Some(v) = self.lstrip {
            t = t.lstrip(v);
        }
        if let Some(v) = self.rstrip {
            t = t.rstrip(v);
        }
        if let Some(v) = self.normalized {
            t = t.normalized(v);
        }
        t
    }

    /// `copy.deepcopy` goes through `__getstate__`/`__setstate__`, which fixes
    /// every flag to its current resolved value.
    pub(super) fn frozen(&self) -> PyTok {
        let t = self.resolve();
        PyTok {
            content: t.content,
            single_word: Some(t.single_word),
            lstrip: Some(t.lstrip),
            rstrip: Some(t.rstrip),
            normalized: Some(t.normalized),
            special: t.special,
        }
    }

    /// `AddedToken(**obj)`, as HF does for dicts in its json files.
    pub(super) fn from_json(obj: &Map<String, Value>, file: &Path) -> Result<PyTok> {
        let content = match obj.get("content") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(tok_err(
                    file,
                    "an AddedToken entry has no string \"content\"",
                ))
            }
        };
        let flag = |k: &str| -> Result<Option<bool>> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(v) => Err(tok_err(
                    file,
                    &format!("AddedToken {content:?}: \"{k}\" is {v}, expected a boolean"),
                )),
            }
        };
        Ok(PyTok {
            single_word: flag("single_word")?,
            lstrip: flag("lstrip")?,
            rstrip: flag("rstrip")?,
            normalized: flag("normalized")?,
            special: flag("special")?.unwrap_or(false),
            content,
        })
    }
}

/// A special-token attribute value: a plain string or an `AddedToken`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Special {
    Str(String),
    Tok(PyTok),
}

impl Special {
    pub(super) fn content(&self) -> &str {
        match self {
            Special::Str(s) => s,
            Special::Tok(t) => &t.content,
        }
    }

    pub(super) fn frozen(&self) -> Special {
        match self {
            Special::Str(s) => Special::Str(s.clone()),
            Special::Tok(t) => Special::Tok(t.frozen()),
        }
    }

    /// Python `==` between special values: strings by value, AddedTokens by all
    /// resolved flags, a string never equals an AddedToken.
    pub(super) fn py_eq(&self, other: &Special) -> bool {
        match (self, other) {
            (Special::Str(a), Special::Str(b)) => a == b,
            (Special::Tok(a), Special::Tok(b)) => a.resolve() == b.resolve(),
            _ => false,
        }
    }
}
