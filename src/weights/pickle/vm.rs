//! The restricted pickle stack machine: the opcodes `torch.save` writes,
//! objects in a flat arena, no recursion. What globals and persistent ids
//! mean is in `torch`.

use std::collections::HashMap;

use super::torch::{resolve_global, Global};
use super::{PtDType, MAX_MARK_DEPTH, MAX_NDIM};

/// Index of an object in the arena.
pub(in crate::weights) type H = usize;

#[derive(Debug, Clone)]
pub(in crate::weights) enum Obj {
    None,
    Bool(bool),
    Int(i64),
    /// LONG1 integers of 9 to 16 bytes (the legacy format's magic number).
    Long(i128),
    /// Values the reader never needs are kept only as their kind.
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<H>),
    List(Vec<H>),
    /// Pairs in insertion order; duplicates are resolved when read.
    Dict(Vec<(H, H)>),
    Global(Global),
    /// A storage's dtype, key (a `Str`) and element count; in the legacy
    /// format maybe a slice of it: (key, offset, numel).
    Storage {
        dtype: PtDType,
        key: H,
        numel: usize,
        view: Option<(H, usize, usize)>,
    },
    /// Handles of a `Storage` and of the size and stride tuples, validated
    /// when the tensor is built; nothing is copied so repeats cost O(1).
    Tensor {
        storage: H,
        offset: usize,
        size: H,
        stride: H,
    },
}

impl Obj {
    pub(in crate::weights) fn kind(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "bool",
            Obj::Int(_) | Obj::Long(_) => "int",
            Obj::Float => "float",
            Obj::Str(_) => "str",
            Obj::Bytes => "bytes",
            Obj::Tuple(_) => "tuple",
            Obj::List(_) => "list",
            Obj::Dict(_) => "dict",
            Obj::Global(_) => "global",
            Obj::Storage { .. } => "storage",
            Obj::Tensor { .. } => "tensor",
        }
    }
}

pub(in crate::weights) type VmResult<T> = std::result::Result<T, String>;

/// Which persistent ids a pickle may hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::weights) enum Container {
    /// `('storage', class, key, location, numel)`: the zip format.
    Zip,
    /// `('storage', class, key, location, numel, view_metadata)`.
    Legacy,
}

pub(in crate::weights) struct Vm<'a> {
    data: &'a [u8],
    /// Bytes read so far; after `run`, where the pickle ended.
    pub(in crate::weights) pos: usize,
    pub(super) container: Container,
    pub(super) arena: Vec<Obj>,
    stack: Vec<H>,
    marks: Vec<usize>,
    memo: HashMap<u32, H>,
}

impl<'a> Vm<'a> {
    pub(in crate::weights) fn new(data: &'a [u8], container: Container) -> Self {
        Vm {
            data,
            pos: 0,
            container,
            arena: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> VmResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "pickle is truncated: needs {n} more bytes at offset {}",
                    self.pos
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> VmResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn arr<const N: usize>(&mut self) -> VmResult<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn line(&mut self) -> VmResult<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .take(256)
            .position(|&b| b == b'\n')
            .ok_or_else(|| {
                format!(
                    "pickle is truncated or malformed: unterminated GLOBAL line at offset {}",
                    self.pos
                )
            })?;
        let s =
            std::str::from_utf8(&rest[..n]).map_err(|_| "GLOBAL name is not UTF-8".to_string())?;
        self.pos += n + 1;
        Ok(s)
    }

    fn alloc(&mut self, o: Obj) -> H {
        self.arena.push(o);
        self.arena.len() - 1
    }
    fn push(&mut self, o: Obj) {
        let h = self.alloc(o);
        self.stack.push(h);
    }
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }
    fn pop(&mut self) -> VmResult<H> {
        if self.stack.len() <= self.floor() {
            return Err("pickle stack underflow".into());
        }
        Ok(self.stack.pop().expect("checked"))
    }
    fn top(&self) -> VmResult<H> {
        if self.stack.len() <= self.floor() {
            return Err("pickle stack underflow".into());
        }
        Ok(*self.stack.last().expect("checked"))
    }
    fn pop_mark(&mut self) -> VmResult<Vec<H>> {
        let m = self.marks.pop().ok_or("pickle has no MARK to pop to")?;
        Ok(self.stack.split_off(m))
    }
    fn pop_n(&mut self, n: usize) -> VmResult<Vec<H>> {
        if self.stack.len() < self.floor() + n {
            return Err("pickle stack underflow".into());
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }
    pub(in crate::weights) fn obj(&self, h: H) -> &Obj {
        &self.arena[h]
    }
    pub(in crate::weights) fn str_of(&self, h: H) -> VmResult<&str> {
        match &self.arena[h] {
            Obj::Str(s) => Ok(s),
            o => Err(format!("expected a str, found {}", o.kind())),
        }
    }
    fn memo_get(&self, i: u32) -> VmResult<H> {
        self.memo
            .get(&i)
            .copied()
            .ok_or_else(|| format!("pickle reads memo slot {i}, which was never written"))
    }
    fn memo_put(&mut self, i: u32) -> VmResult<()> {
        let h = self.top()?;
        self.memo.insert(i, h);
        Ok(())
    }
    fn push_str(&mut self, b: &[u8]) -> VmResult<()> {
        let s = std::str::from_utf8(b).map_err(|_| "string is not UTF-8".to_string())?;
        self.push(Obj::Str(s.to_owned()));
        Ok(())
    }

    pub(in crate::weights) fn run(&mut self) -> VmResult<H> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            self.step(op)
                .map_err(|m| format!("pickle offset {at} (opcode 0x{op:02x}): {m}"))?;
            if op == b'.' {
                return self.pop();
            }
        }
    }

    fn step(&mut self, op: u8) -> VmResult<()> {
        match op {
            0x80 => {
                // PROTO
                let v = self.u8()?;
                if v > 5 {
                    return Err(format!("unsupported pickle protocol {v}"));
                }
            }
            0x95 => {
                // FRAME: a length hint only.
                self.take(8)?;
            }
            b'.' => {} // STOP, handled by run()
            b'(' => {
                if self.marks.len() >= MAX_MARK_DEPTH {
                    return Err(format!("more than {MAX_MARK_DEPTH} nested MARKs"));
                }
                self.marks.push(self.stack.len());
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let h = self.top()?;
                self.stack.push(h);
            }
            b'N' => self.push(Obj::None),
            0x88 => self.push(Obj::Bool(true)),
            0x89 => self.push(Obj::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(self.arr()?);
                self.push(Obj::Int(v as i64));
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Obj::Int(v as i64));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.arr()?);
                self.push(Obj::Int(v as i64));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = self.u8()? as usize;
                let b = self.take(n)?;
                if n > 16 {
                    return Err(format!("integer of {n} bytes is too large"));
                }
                let mut v: i128 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= (x as i128) << (8 * i);
                }
                if n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
                    v -= 1i128 << (8 * n);
                }
                match i64::try_from(v) {
                    Ok(v) => self.push(Obj::Int(v)),
                    Err(_) => self.push(Obj::Long(v)),
                }
            }
            b'G' => {
                self.take(8)?;
                self.push(Obj::Float);
            }
            b'X' => {
                let n = u32::from_le_bytes(self.arr()?) as usize;
                let b = self.take(n)?;
                self.push_str(b)?;
            }
            0x8c => {
                let n = self.u8()? as usize;
                let b = self.take(n)?;
                self.push_str(b)?;
            }
            0x8d => {
                let n = u64::from_le_bytes(self.arr()?);
                let n = usize::try_from(n).map_err(|_| "string too long")?;
                let b = self.take(n)?;
                self.push_str(b)?;
            }
            b'T' | b'U' => {
                // BINSTRING / SHORT_BINSTRING (protocol 1 str): latin-1.
                let n = if op == b'T' {
                    let n = i32::from_le_bytes(self.arr()?);
                    usize::try_from(n).map_err(|_| "negative string length")?
                } else {
                    self.u8()? as usize
                };
                let b = self.take(n)?;
                self.push(Obj::Str(b.iter().map(|&c| c as char).collect()));
            }
            b'B' | b'C' => {
                let n = if op == b'B' {
                    u32::from_le_bytes(self.arr()?) as usize
                } else {
                    self.u8()? as usize
                };
                self.take(n)?;
                self.push(Obj::Bytes);
            }
            b'}' => self.push(Obj::Dict(Vec::new())),
            b']' => self.push(Obj::List(Vec::new())),
            b')' => self.push(Obj::Tuple(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.push(Obj::Tuple(items));
            }
            0x85..=0x87 => {
                let items = self.pop_n((op - 0x84) as usize)?;
                self.push(Obj::Tuple(items));
            }
            b'q' => {
                let i = self.u8()? as u32;
                self.memo_put(i)?;
            }
            b'r' => {
                let i = u32::from_le_bytes(self.arr()?);
                self.memo_put(i)?;
            }
            0x94 => {
                // MEMOIZE
                let i = u32::try_from(self.memo.len()).map_err(|_| "memo too large")?;
                self.memo_put(i)?;
            }
            b'h' => {
                let i = self.u8()? as u32;
                let h = self.memo_get(i)?;
                self.stack.push(h);
            }
            b'j' => {
                let i = u32::from_le_bytes(self.arr()?);
                let h = self.memo_get(i)?;
                self.stack.push(h);
            }
            b'a' => {
                let v = self.pop()?;
                let l = self.top()?;
                self.list_mut(l)?.push(v);
            }
            b'e' => {
                let items = self.pop_mark()?;
                let l = self.top()?;
                self.list_mut(l)?.extend(items);
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                let d = self.top()?;
                self.dict_mut(d)?.push((k, v));
            }
            b'u' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                let d = self.top()?;
                let pairs: Vec<(H, H)> = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                self.dict_mut(d)?.extend(pairs);
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = resolve_global(module, name)?;
                self.push(Obj::Global(g));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = self.pop()?;
                let module = self.pop()?;
                let g = resolve_global(self.str_of(module)?, self.str_of(name)?)?;
                self.push(Obj::Global(g));
            }
            b'Q' => {
                let pid = self.pop()?;
                let st = self.persistent_load(pid)?;
                self.push(st);
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let o = self.reduce(func, args)?;
                self.push(o);
            }
            b'b' => {
                // BUILD: the state of an OrderedDict (`_metadata` of a
                // state_dict) or of a tensor is dropped.
                let _state = self.pop()?;
                let obj = self.top()?;
                match &self.arena[obj] {
                    Obj::Dict(_) | Obj::Tensor { .. } => {}
                    o => return Err(format!("BUILD on a {}, which is not allowed", o.kind())),
                }
            }
            _ => {
                return Err(format!(
                    "unsupported pickle opcode 0x{op:02x} ({:?})",
                    op as char
                ));
            }
        }
        Ok(())
    }

    fn list_mut(&mut self, h: H) -> VmResult<&mut Vec<H>> {
        match &mut self.arena[h] {
            Obj::List(l) => Ok(l),
            o => Err(format!("APPEND to a {}", o.kind())),
        }
    }
    fn dict_mut(&mut self, h: H) -> VmResult<&mut Vec<(H, H)>> {
        match &mut self.arena[h] {
            Obj::Dict(d) => Ok(d),
            o => Err(format!("SETITEM on a {}", o.kind())),
        }
    }

    pub(super) fn tuple(&self, h: H, what: &str) -> VmResult<&[H]> {
        match &self.arena[h] {
            Obj::Tuple(t) => Ok(t),
            o => Err(format!("{what} should be a tuple, found {}", o.kind())),
        }
    }
    pub(super) fn uint(&self, h: H, what: &str) -> VmResult<usize> {
        match &self.arena[h] {
            Obj::Int(v) => usize::try_from(*v).map_err(|_| format!("{what} is negative ({v})")),
            o => Err(format!("{what} should be an int, found {}", o.kind())),
        }
    }
    pub(super) fn uint_tuple(&self, h: H, what: &str) -> VmResult<Vec<usize>> {
        let t = self.tuple(h, what)?;
        if t.len() > MAX_NDIM {
            return Err(format!(
                "{what} has {} dimensions, more than {MAX_NDIM}",
                t.len()
            ));
        }
        t.iter().map(|&x| self.uint(x, what)).collect()
    }
}
