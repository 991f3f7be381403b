//! Input mutations: byte-level ones for every target, structural ones (fields
//! removed, duplicated or given odd values) for JSON.

use bertrt::rng::Rng;
use serde_json::Value;
use std::ops::Range;

/// Integers that sit on edges: zero, minus one, powers of two around the
/// 32- and 64-bit limits.
const INTERESTING: [i64; 12] = [
    0,
    1,
    -1,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    1 << 31,
    1 << 32,
    i64::MAX,
    i64::MIN,
];

/// The same edges (and more) as they appear in text files.
const INTERESTING_TEXT: [&str; 14] = [
    "0",
    "-1",
    "2147483647",
    "2147483648",
    "4294967296",
    "-2147483649",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "1e12",
    "1e308",
    "-0.0",
    "NaN",
    "1000000000000",
];

pub struct Mutator {
    rng: Rng,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: Rng::new(seed),
        }
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.rng.below(n.max(1))
    }

    /// A position in `0..len` (or `0..=len` with `end`), inside `focus` most
    /// of the time when there is one.
    fn pos(&mut self, len: usize, focus: &Option<Range<usize>>, end: bool) -> usize {
        let n = len + end as usize;
        if n == 0 {
            return 0;
        }
        if let Some(f) = focus {
            let (a, b) = (f.start.min(n - 1), f.end.min(n));
            if b > a && self.below(5) != 0 {
                return a + self.below(b - a);
            }
        }
        self.below(n)
    }

    /// One to four stacked mutations of `data`; `others` are splice partners.
    pub fn mutate(
        &mut self,
        mut data: Vec<u8>,
        others: &[Vec<u8>],
        json: bool,
        focus: Option<Range<usize>>,
    ) -> Vec<u8> {
        let rounds = 1 + self.below(4);
        for _ in 0..rounds {
            // JSON: half the edits keep the syntax (a bit flip rarely does).
            if json && self.below(2) == 0 {
                data = self.mutate_json(data);
                continue;
            }
            match self.below(9) {
                0 => {
                    if !data.is_empty() {
                        let p = self.pos(data.len(), &focus, false);
                        data[p] ^= 1 << self.below(8);
                    }
                }
                1 => {
                    if !data.is_empty() {
                        let p = self.pos(data.len(), &focus, false);
                        data[p] = self.rng.next_u64() as u8;
                    }
                }
                2 => {
                    let p = self.pos(data.len(), &focus, true);
                    let n = 1 + self.below(8);
                    let bytes: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                    data.splice(p..p, bytes);
                }
                3 => {
                    if !data.is_empty() {
                        let p = self.pos(data.len(), &focus, false);
                        let n = (1 + self.below(16)).min(data.len() - p);
                        data.drain(p..p + n);
                    }
                }
                4 => {
                    let p = self.pos(data.len(), &focus, true);
                    data.truncate(p);
                }
                5 => {
                    // Splice: our prefix, another seed's suffix.
                    let other = &others[self.below(others.len())];
                    let p = self.pos(data.len(), &focus, true);
                    let q = self.below(other.len() + 1);
                    data.truncate(p);
                    data.extend_from_slice(&other[q..]);
                }
                6 => {
                    // An interesting integer as 1, 2, 4 or 8 little-endian bytes.
                    let v = INTERESTING[self.below(INTERESTING.len())];
                    let w = 1 << self.below(4);
                    let p = self.pos(data.len(), &focus, false);
                    for (i, b) in v.to_le_bytes().iter().take(w).enumerate() {
                        if let Some(d) = data.get_mut(p + i) {
                            *d = *b;
                        }
                    }
                }
                7 => {
                    // Replace the decimal number at or after a position.
                    let p = self.pos(data.len(), &focus, false);
                    if let Some(s) = data.iter().skip(p).position(|b| b.is_ascii_digit()) {
                        let s = p + s;
                        let e = s + data[s..].iter().take_while(|b| b.is_ascii_digit()).count();
                        let t = INTERESTING_TEXT[self.below(INTERESTING_TEXT.len())];
                        data.splice(s..e, t.bytes());
                    }
                }
                _ => {
                    // Copy a chunk elsewhere (repeats of records, lines, entries).
                    if !data.is_empty() {
                        let a = self.pos(data.len(), &focus, false);
                        let n = (1 + self.below(64)).min(data.len() - a);
                        let chunk = data[a..a + n].to_vec();
                        let p = self.pos(data.len(), &focus, true);
                        data.splice(p..p, chunk);
                    }
                }
            }
        }
        data
    }

    /// A safetensors file with its JSON header edited structurally (shapes,
    /// offsets, dtypes given odd values) and its length prefix redone.
    pub fn mutate_safetensors_header(&mut self, data: Vec<u8>) -> Vec<u8> {
        let Some(n) = data
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
        else {
            return data;
        };
        if n > data.len() - 8 {
            return data;
        }
        let header = self.mutate_json(data[8..8 + n].to_vec());
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&data[8 + n..]);
        out
    }

    /// Removes, duplicates or re-values one field (or array element) of a
    /// random object or array; unparsable input gets a bit flip instead.
    pub fn mutate_json(&mut self, data: Vec<u8>) -> Vec<u8> {
        let Ok(mut v) = serde_json::from_slice::<Value>(&data) else {
            let mut d = data;
            if !d.is_empty() {
                let p = self.below(d.len());
                d[p] ^= 1 << self.below(8);
            }
            return d;
        };
        let count = count_containers(&v);
        let target = self.below(count);
        let mut seen = 0;
        let mut duplicate: Option<String> = None;
        edit_nth(&mut v, target, &mut seen, &mut |node| {
            self.edit_node(node, &mut duplicate)
        });
        let text = serde_json::to_string(&v).unwrap_or_default();
        match duplicate {
            // The edited object was swapped for a marker string; put it back
            // with its first field written twice (serde_json keeps one).
            Some(obj_text) => text.replacen(&format!("\"{DUP_MARK}\""), &obj_text, 1),
            None => text,
        }
        .into_bytes()
    }

    fn odd_value(&mut self) -> Value {
        match self.below(10) {
            0 => Value::Null,
            1 => Value::Bool(true),
            2 => Value::String(String::new()),
            3 => Value::String("x".repeat(1 + self.below(5000))),
            4 => serde_json::json!([]),
            5 => serde_json::json!({}),
            6 => serde_json::json!(1e308),
            7 => serde_json::json!(u64::MAX),
            8 => serde_json::json!(-1.5),
            _ => serde_json::json!(INTERESTING[self.below(INTERESTING.len())]),
        }
    }

    fn edit_node(&mut self, node: &mut Value, duplicate: &mut Option<String>) {
        match node {
            Value::Object(map) if !map.is_empty() => {
                let i = self.below(map.len());
                let key = map.keys().nth(i).cloned().unwrap_or_default();
                match self.below(3) {
                    0 => {
                        map.shift_remove(&key);
                    }
                    1 => {
                        let v = self.odd_value();
                        map.insert(key, v);
                    }
                    _ => {
                        let dup_value = if self.below(2) == 0 {
                            map[&key].clone()
                        } else {
                            self.odd_value()
                        };
                        let body = serde_json::to_string(&*map).unwrap_or_default();
                        let first = format!(
                            "{}:{}",
                            serde_json::to_string(&key).unwrap_or_default(),
                            serde_json::to_string(&dup_value).unwrap_or_default()
                        );
                        // `body` starts with '{' and is non-empty.
                        *duplicate = Some(format!("{{{first},{}", &body[1..]));
                        *node = Value::String(DUP_MARK.into());
                    }
                }
            }
            Value::Array(items) if !items.is_empty() => {
                let i = self.below(items.len());
                match self.below(3) {
                    0 => {
                        items.remove(i);
                    }
                    1 => items[i] = self.odd_value(),
                    _ => {
                        let copy = items[i].clone();
                        items.insert(i, copy);
                    }
                }
            }
            other => *other = self.odd_value(),
        }
    }
}

const DUP_MARK: &str = "@@fuzz-duplicate@@";

fn count_containers(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(count_containers).sum::<usize>(),
        Value::Array(a) => 1 + a.iter().map(count_containers).sum::<usize>(),
        _ => 0,
    }
}

/// Calls `f` on the `n`-th object or array in pre-order.
fn edit_nth(v: &mut Value, n: usize, seen: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
    if !(v.is_object() || v.is_array()) {
        return false;
    }
    if *seen == n {
        f(v);
        return true;
    }
    *seen += 1;
    match v {
        Value::Object(m) => m.values_mut().any(|c| edit_nth(c, n, seen, f)),
        Value::Array(a) => a.iter_mut().any(|c| edit_nth(c, n, seen, f)),
        _ => false,
    }
}
