//! A minimal reader for sentencepiece's `ModelProto` (the `spiece.model` file):
//! just the fields that HF's slow->fast converter reads (pieces with score and
//! type, the trainer's model type / unk id / unk piece / byte fallback, and the
//! normalizer's precompiled charsmap). Everything else is skipped by wire type.
//!
//! Field numbers are those of sentencepiece_model.proto:
//! `ModelProto { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
//! NormalizerSpec normalizer_spec = 3; ... }`,
//! `SentencePiece { string piece = 1; float score = 2; Type type = 3 [default = NORMAL]; }`,
//! `TrainerSpec { ModelType model_type = 3 [default = UNIGRAM]; bool byte_fallback = 35;
//! int32 unk_id = 40 [default = 0]; string unk_piece = 45 [default = "<unk>"]; }`,
//! `NormalizerSpec { bytes precompiled_charsmap = 2; }`.

/// `SentencePiece.Type` values.
pub(crate) const PIECE_NORMAL: i32 = 1;
pub(crate) const PIECE_CONTROL: i32 = 3;
pub(crate) const PIECE_USER_DEFINED: i32 = 4;

/// `TrainerSpec.ModelType` values.
pub(crate) const MODEL_UNIGRAM: i32 = 1;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpmPiece {
    pub piece: String,
    pub score: f32,
    pub kind: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpmModel {
    pub pieces: Vec<SpmPiece>,
    pub model_type: i32,
    pub unk_id: i32,
    pub unk_piece: String,
    pub byte_fallback: bool,
    pub precompiled_charsmap: Vec<u8>,
}

impl Default for SpmModel {
    fn default() -> Self {
        SpmModel {
            pieces: Vec::new(),
            model_type: MODEL_UNIGRAM,
            unk_id: 0,
            unk_piece: "<unk>".to_string(),
            byte_fallback: false,
            precompiled_charsmap: Vec::new(),
        }
    }
}

/// One decoded field value.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes at byte {} runs past the end", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Next (field number, value).
    fn field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = self.varint()?;
        let number = key >> 3;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| format!("length {n} too large"))?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes(b.try_into().unwrap()))
            }
            w => return Err(format!("unsupported wire type {w} for field {number}")),
        };
        Ok((number, value))
    }
}

fn as_i32(v: &Value, what: &str) -> Result<i32, String> {
    match v {
        // int32 / enum: negative values are sign-extended to 64 bits.
        Value::Varint(x) => Ok(*x as i64 as i32),
        _ => Err(format!("{what}: expected a varint")),
    }
}

fn as_bytes<'a>(v: &Value<'a>, what: &str) -> Result<&'a [u8], String> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(format!("{what}: expected a length-delimited field")),
    }
}

fn as_string(v: &Value, what: &str) -> Result<String, String> {
    let b = as_bytes(v, what)?;
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what}: not valid UTF-8"))
}

fn parse_piece(buf: &[u8]) -> Result<SpmPiece, String> {
    let mut p = SpmPiece {
        piece: String::new(),
        score: 0.0,
        kind: PIECE_NORMAL,
    };
    let mut r = Reader::new(buf);
    while !r.done() {
        let (n, v) = r.field()?;
        match n {
            1 => p.piece = as_string(&v, "SentencePiece.piece")?,
            2 => match v {
                Value::Fixed32(x) => p.score = f32::from_bits(x),
                _ => return Err("SentencePiece.score: expected a 32-bit float".into()),
            },
            3 => p.kind = as_i32(&v, "SentencePiece.type")?,
            _ => {}
        }
    }
    Ok(p)
}

fn parse_trainer_spec(buf: &[u8], m: &mut SpmModel) -> Result<(), String> {
    let mut r = Reader::new(buf);
    while !r.done() {
        let (n, v) = r.field()?;
        match n {
            3 => m.model_type = as_i32(&v, "TrainerSpec.model_type")?,
            35 => m.byte_fallback = as_i32(&v, "TrainerSpec.byte_fallback")? != 0,
            40 => m.unk_id = as_i32(&v, "TrainerSpec.unk_id")?,
            45 => m.unk_piece = as_string(&v, "TrainerSpec.unk_piece")?,
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer_spec(buf: &[u8], m: &mut SpmModel) -> Result<(), String> {
    let mut r = Reader::new(buf);
    while !r.done() {
        let (n, v) = r.field()?;
        if n == 2 {
            m.precompiled_charsmap = as_bytes(&v, "NormalizerSpec.precompiled_charsmap")?.to_vec();
        }
    }
    Ok(())
}

/// Parses a serialized `ModelProto`. Errors say which field is malformed.
pub(crate) fn parse_model(buf: &[u8]) -> Result<SpmModel, String> {
    let mut m = SpmModel::default();
    let mut r = Reader::new(buf);
    while !r.done() {
        let (n, v) = r.field()?;
        match n {
            1 => m
                .pieces
                .push(parse_piece(as_bytes(&v, "ModelProto.pieces")?)?),
            // Repeated occurrences of an embedded message merge, as in protobuf.
            2 => parse_trainer_spec(as_bytes(&v, "ModelProto.trainer_spec")?, &mut m)?,
            3 => parse_normalizer_spec(as_bytes(&v, "ModelProto.normalizer_spec")?, &mut m)?,
            _ => {}
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut x: u64, out: &mut Vec<u8>) {
        loop {
            let b = (x & 0x7f) as u8;
            x >>= 7;
            if x == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(n: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    #[test]
    fn parses_hand_built_model() {
        let mut piece = Vec::new();
        bytes_field(1, "▁a".as_bytes(), &mut piece);
        varint(2 << 3 | 5, &mut piece);
        piece.extend_from_slice(&(-1.5f32).to_bits().to_le_bytes());
        varint(3 << 3, &mut piece);
        varint(3, &mut piece);
        let mut trainer = Vec::new();
        varint(3 << 3, &mut trainer);
        varint(1, &mut trainer);
        varint(40 << 3, &mut trainer);
        varint(1, &mut trainer);
        varint(99 << 3 | 1, &mut trainer); // unknown fixed64 field, skipped
        trainer.extend_from_slice(&[0; 8]);
        let mut norm = Vec::new();
        bytes_field(1, b"nmt_nfkc", &mut norm);
        bytes_field(2, &[1, 2, 3], &mut norm);
        let mut model = Vec::new();
        bytes_field(1, &piece, &mut model);
        bytes_field(2, &trainer, &mut model);
        bytes_field(3, &norm, &mut model);
        let m = parse_model(&model).unwrap();
        assert_eq!(m.pieces.len(), 1);
        assert_eq!(m.pieces[0].piece, "▁a");
        assert_eq!(m.pieces[0].score, -1.5);
        assert_eq!(m.pieces[0].kind, PIECE_CONTROL);
        assert_eq!(m.model_type, MODEL_UNIGRAM);
        assert_eq!(m.unk_id, 1);
        assert_eq!(m.unk_piece, "<unk>");
        assert_eq!(m.precompiled_charsmap, vec![1, 2, 3]);
        assert!(parse_model(&model[..model.len() - 1]).is_err());
    }
}
