//! GGUF reader (versions 2 and 3).
//!
//! Layout, from the GGUF specification (ggml/docs/gguf.md):
//! ```text
//! u32 magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count
//! metadata_kv_count × { string key | u32 value_type | value }
//! tensor_count      × { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//! padding to `general.alignment` (default 32)
//! tensor data; each tensor at data_start + offset (offset a multiple of the alignment)
//! ```
//! Strings are a u64 byte length followed by UTF-8 bytes; everything is little-endian.
//! `ne[0]` is the innermost (contiguous) dimension, so a linear layer `[out, in]` is stored
//! with `ne = [in, out]` and each output row is one contiguous run of blocks.
//!
//! The file is memory-mapped; [`TensorInfo::data`] borrows tensor bytes straight from the map.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{ModelError, Result};
use crate::quant::GgmlType;

/// `GGUF` read as a little-endian u32.
const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment used when `general.alignment` is absent (GGUF spec: `GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value, every type the GGUF spec defines (`gguf_metadata_value_type` 0–12).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `UINT8` (0).
    U8(u8),
    /// `INT8` (1).
    I8(i8),
    /// `UINT16` (2).
    U16(u16),
    /// `INT16` (3).
    I16(i16),
    /// `UINT32` (4).
    U32(u32),
    /// `INT32` (5).
    I32(i32),
    /// `FLOAT32` (6).
    F32(f32),
    /// `BOOL` (7): one byte, 0 or 1.
    Bool(bool),
    /// `STRING` (8).
    String(String),
    /// `ARRAY` (9): element type, count, elements (not nested).
    Array(Vec<Value>),
    /// `UINT64` (10).
    U64(u64),
    /// `INT64` (11).
    I64(i64),
    /// `FLOAT64` (12).
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is any numeric type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's description from the tensor-info table.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first (`ne[0]` is contiguous).
    pub dims: Vec<u64>,
    /// Block format of the data.
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub file_offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (product of the dimensions).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    alignment: u64,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    index: BTreeMap<String, usize>,
    map: Arc<Mmap>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(ModelError::Truncated {
                path: self.path.to_owned(),
                what: what(),
                needed: self.pos as u64 + n as u64,
                len: self.buf.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("length checked"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .map_err(|_| self.malformed(format!("{}: length {len}", what())))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.malformed(format!("{}: string is not UTF-8", what())))
    }

    fn malformed(&self, what: String) -> ModelError {
        ModelError::Malformed {
            path: self.path.to_owned(),
            what,
        }
    }

    /// Reads a value of GGUF type `ty`; `key` names it in errors.
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        let what = || format!("metadata value of '{key}'");
        Ok(match ty {
            0 => Value::U8(self.array::<1>(&what)?[0]),
            1 => Value::I8(self.array::<1>(&what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.malformed(format!("key '{key}': bool byte {b}"))),
            },
            8 => Value::String(self.string(&what)?),
            9 => {
                if depth > 0 {
                    // llama.cpp rejects nested arrays too; they never occur in the field.
                    return Err(self.malformed(format!("key '{key}': nested array")));
                }
                let elem_ty = self.u32(&what)?;
                let len = self.u64(&what)?;
                // Every element takes at least one byte: a count beyond the file is corrupt.
                if len > (self.buf.len() - self.pos) as u64 {
                    return Err(ModelError::Truncated {
                        path: self.path.to_owned(),
                        what: format!("array of '{key}' ({len} elements)"),
                        needed: self.pos as u64 + len,
                        len: self.buf.len() as u64,
                    });
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            other => return Err(self.malformed(format!("key '{key}': unknown value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Opens and parses `path`, memory-mapping the tensor data.
    ///
    /// # Errors
    /// [`ModelError::Io`], [`ModelError::BadMagic`], [`ModelError::UnsupportedVersion`],
    /// [`ModelError::Truncated`], [`ModelError::Malformed`], [`ModelError::UnknownTensorType`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| ModelError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; the model file is not expected to change while open
        // (the same contract llama.cpp's mmap loader relies on).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, Arc::new(map))
    }

    fn parse(path: &Path, map: Arc<Mmap>) -> Result<Self> {
        let mut c = Cursor {
            path,
            buf: &map[..],
            pos: 0,
        };
        let magic: [u8; 4] = c.array(&|| "header".into())?;
        if magic != GGUF_MAGIC {
            return Err(ModelError::BadMagic {
                path: path.to_owned(),
                magic,
            });
        }
        let version = c.u32(&|| "header".into())?;
        if !(2..=3).contains(&version) {
            return Err(ModelError::UnsupportedVersion {
                path: path.to_owned(),
                version,
            });
        }
        let n_tensors = c.u64(&|| "header".into())?;
        let n_kv = c.u64(&|| "header".into())?;
        let remaining = (c.buf.len() - c.pos) as u64;
        if n_tensors > remaining || n_kv > remaining {
            return Err(ModelError::Truncated {
                path: path.to_owned(),
                what: format!("{n_tensors} tensor infos and {n_kv} metadata entries"),
                needed: c.pos as u64 + n_tensors.max(n_kv),
                len: c.buf.len() as u64,
            });
        }

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata key #{i}"))?;
            let ty = c.u32(&|| format!("type of metadata key '{key}'"))?;
            let value = c.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(ModelError::BadKey {
                        path: path.to_owned(),
                        key: "general.alignment".into(),
                        what: format!("must be a power of two, got {v:?}"),
                    })
                }
            },
        };

        struct Raw {
            name: String,
            dims: Vec<u64>,
            type_id: u32,
            offset: u64,
        }
        let mut raws = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&|| format!("tensor info #{i}"))?;
            let what = || format!("tensor info '{name}'");
            let n_dims = c.u32(&what)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(c.malformed(format!(
                    "tensor '{name}': {n_dims} dimensions (1–4 allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)?);
            }
            let type_id = c.u32(&what)?;
            let offset = c.u64(&what)?;
            raws.push(Raw {
                name,
                dims,
                type_id,
                offset,
            });
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;

        let mut tensors = Vec::with_capacity(raws.len());
        let mut index = BTreeMap::new();
        for raw in raws {
            let ggml_type =
                GgmlType::from_id(raw.type_id).ok_or_else(|| ModelError::UnknownTensorType {
                    path: path.to_owned(),
                    tensor: raw.name.clone(),
                    type_id: raw.type_id,
                })?;
            let bad = |what: String| ModelError::BadTensor {
                path: path.to_owned(),
                tensor: raw.name.clone(),
                what,
            };
            if raw.offset % alignment != 0 {
                return Err(bad(format!(
                    "data offset {} is not a multiple of the alignment {alignment}",
                    raw.offset
                )));
            }
            let n_elements = raw
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| bad(format!("dimensions {:?} overflow", raw.dims)))?;
            let block = ggml_type.block_size() as u64;
            if raw.dims[0] % block != 0 {
                return Err(bad(format!(
                    "ne[0] = {} is not a multiple of the {} block size {block}",
                    raw.dims[0],
                    ggml_type.name()
                )));
            }
            let n_bytes = n_elements / block * ggml_type.block_bytes() as u64;
            let file_offset = data_start + raw.offset;
            let end = file_offset.saturating_add(n_bytes);
            if end > map.len() as u64 {
                return Err(ModelError::Truncated {
                    path: path.to_owned(),
                    what: format!("data of tensor '{}'", raw.name),
                    needed: end,
                    len: map.len() as u64,
                });
            }
            if index.insert(raw.name.clone(), tensors.len()).is_some() {
                return Err(bad("duplicate tensor name".into()));
            }
            tensors.push(TensorInfo {
                name: raw.name,
                dims: raw.dims,
                ggml_type,
                file_offset,
                n_bytes,
            });
        }

        Ok(Self {
            path: path.to_owned(),
            version,
            alignment,
            metadata,
            tensors,
            index,
            map,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The metadata value of `key`, or [`ModelError::MissingKey`].
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| ModelError::MissingKey {
                path: self.path.clone(),
                key: key.into(),
            })
    }

    fn bad_key(&self, key: &str, what: impl Into<String>) -> ModelError {
        ModelError::BadKey {
            path: self.path.clone(),
            key: key.into(),
            what: what.into(),
        }
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| self.bad_key(key, "expected a string"))
    }

    /// `key` as an unsigned integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)?
            .as_u64()
            .ok_or_else(|| self.bad_key(key, "expected a non-negative integer"))
    }

    /// `key` as a float.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)?
            .as_f64()
            .ok_or_else(|| self.bad_key(key, "expected a number"))
    }

    /// `key` as an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let arr = self
            .get(key)?
            .as_array()
            .ok_or_else(|| self.bad_key(key, "expected an array"))?;
        arr.iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.bad_key(key, "expected an array of strings"))
            })
            .collect()
    }

    /// The tensor info of `name`, or [`ModelError::MissingTensor`].
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                tensor: name.into(),
            })
    }

    /// The raw bytes of a tensor, borrowed from the memory map.
    pub fn data(&self, info: &TensorInfo) -> &[u8] {
        &self.map[info.file_offset as usize..(info.file_offset + info.n_bytes) as usize]
    }

    /// Drops the map's resident pages (`madvise(MADV_DONTNEED)`): after a backend copied the
    /// weights it needs, the pages read while copying stop counting against the process; any
    /// later read of the map faults its page back in from the file.
    pub fn release_resident_pages(&self) {
        // SAFETY: the mapping is a read-only file mapping, so DONTNEED never loses data: pages
        // are re-read from the file on the next access.
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    /// Like [`Self::release_resident_pages`], for one tensor's pages.
    pub fn release_tensor_pages(&self, info: &TensorInfo) {
        // Whole pages inside the tensor only: a neighbour sharing an edge page keeps it.
        let page = 4096u64;
        let start = info.file_offset.div_ceil(page) * page;
        let end = (info.file_offset + info.n_bytes) / page * page;
        if end > start {
            // SAFETY: as in `release_resident_pages`.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start as usize,
                    (end - start) as usize,
                )
            };
        }
    }

    /// The shared memory map, for weights that keep borrowing it.
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }
}

/// Builds GGUF files in memory, for tests and tools (v3 unless told otherwise).
///
/// Writes exactly the layout [`GgufFile`] reads; tensor data is aligned to `alignment`.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    /// GGUF version to write.
    pub version: u32,
    /// Data alignment (written as `general.alignment` when not 32).
    pub alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

impl GgufWriter {
    /// Adds a metadata entry.
    pub fn kv(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a tensor with dims innermost first and a raw `ggml_type` id.
    pub fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> &mut Self {
        self.tensors
            .push((name.into(), dims.to_vec(), type_id, data));
        self
    }

    /// Serialises the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        fn type_id(v: &Value) -> u32 {
            match v {
                Value::U8(_) => 0,
                Value::I8(_) => 1,
                Value::U16(_) => 2,
                Value::I16(_) => 3,
                Value::U32(_) => 4,
                Value::I32(_) => 5,
                Value::F32(_) => 6,
                Value::Bool(_) => 7,
                Value::String(_) => 8,
                Value::Array(_) => 9,
                Value::U64(_) => 10,
                Value::I64(_) => 11,
                Value::F64(_) => 12,
            }
        }
        fn value(out: &mut Vec<u8>, v: &Value) {
            match v {
                Value::U8(x) => out.push(*x),
                Value::I8(x) => out.push(*x as u8),
                Value::U16(x) => out.extend(x.to_le_bytes()),
                Value::I16(x) => out.extend(x.to_le_bytes()),
                Value::U32(x) => out.extend(x.to_le_bytes()),
                Value::I32(x) => out.extend(x.to_le_bytes()),
                Value::F32(x) => out.extend(x.to_le_bytes()),
                Value::Bool(x) => out.push(*x as u8),
                Value::String(s) => string(out, s),
                Value::Array(items) => {
                    let elem = items.first().map_or(4, type_id);
                    out.extend(elem.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    for item in items {
                        value(out, item);
                    }
                }
                Value::U64(x) => out.extend(x.to_le_bytes()),
                Value::I64(x) => out.extend(x.to_le_bytes()),
                Value::F64(x) => out.extend(x.to_le_bytes()),
            }
        }
        let mut metadata = self.metadata.clone();
        if self.alignment != DEFAULT_ALIGNMENT {
            metadata.push((
                "general.alignment".into(),
                Value::U32(self.alignment as u32),
            ));
        }
        let mut out = Vec::new();
        out.extend(GGUF_MAGIC);
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        for (k, v) in &metadata {
            string(&mut out, k);
            out.extend(type_id(v).to_le_bytes());
            value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        let data_start = (out.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.resize(data_start as usize, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend(data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_tmp(bytes: &[u8]) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(bytes)
    }

    /// Minimal temp-file helper (the std library has none).
    mod tempfile_path {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicU32, Ordering};

        pub struct TempPath(pub PathBuf);
        impl TempPath {
            pub fn with(bytes: &[u8]) -> Self {
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "gguf-test-{}-{}.gguf",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&p, bytes).unwrap();
                TempPath(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn sample(version: u32, alignment: u64) -> Vec<u8> {
        let mut w = GgufWriter {
            version,
            alignment,
            ..Default::default()
        };
        w.kv("general.architecture", Value::String("llama".into()))
            .kv("u8", Value::U8(7))
            .kv("i8", Value::I8(-7))
            .kv("u16", Value::U16(700))
            .kv("i16", Value::I16(-700))
            .kv("u32", Value::U32(70000))
            .kv("i32", Value::I32(-70000))
            .kv("f32", Value::F32(1.5))
            .kv("bool", Value::Bool(true))
            .kv("u64", Value::U64(1 << 40))
            .kv("i64", Value::I64(-(1 << 40)))
            .kv("f64", Value::F64(-2.25))
            .kv(
                "arr",
                Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]),
            );
        w.tensor(
            "t.f32",
            &[2, 3],
            0,
            (0..6u32).flat_map(|i| (i as f32).to_le_bytes()).collect(),
        );
        w.tensor("t.q8", &[32], 8, vec![1u8; 34]);
        w.to_bytes()
    }

    #[test]
    fn reads_every_value_type_v2_and_v3_and_alignment() {
        for (version, alignment) in [(2, 32), (3, 32), (3, 64)] {
            let tmp = write_tmp(&sample(version, alignment));
            let f = GgufFile::open(&tmp.0).unwrap();
            assert_eq!(f.version(), version);
            assert_eq!(f.alignment(), alignment);
            let m = f.metadata();
            assert_eq!(m["u8"], Value::U8(7));
            assert_eq!(m["i8"], Value::I8(-7));
            assert_eq!(m["u16"], Value::U16(700));
            assert_eq!(m["i16"], Value::I16(-700));
            assert_eq!(m["u32"], Value::U32(70000));
            assert_eq!(m["i32"], Value::I32(-70000));
            assert_eq!(m["f32"], Value::F32(1.5));
            assert_eq!(m["bool"], Value::Bool(true));
            assert_eq!(m["u64"], Value::U64(1 << 40));
            assert_eq!(m["i64"], Value::I64(-(1 << 40)));
            assert_eq!(m["f64"], Value::F64(-2.25));
            assert_eq!(f.get_str_array("arr").unwrap(), vec!["a", "bc"]);
            let t = f.tensor("t.f32").unwrap();
            assert_eq!(t.dims, vec![2, 3]);
            assert_eq!(t.file_offset % alignment, 0);
            let floats: Vec<f32> = f
                .data(t)
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            assert_eq!(floats, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
            let q = f.tensor("t.q8").unwrap();
            assert_eq!(q.ggml_type, GgmlType::Q8_0);
            assert_eq!(f.data(q), &[1u8; 34][..]);
            assert_eq!(q.file_offset % alignment, 0);
        }
    }

    #[test]
    fn bad_magic_names_the_file() {
        let mut bytes = sample(3, 32);
        bytes[0..4].copy_from_slice(b"GGML");
        let tmp = write_tmp(&bytes);
        let err = GgufFile::open(&tmp.0).unwrap_err();
        assert!(matches!(err, ModelError::BadMagic { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&tmp.0.display().to_string()) && msg.contains("magic"),
            "{msg}"
        );
    }

    #[test]
    fn unsupported_version() {
        let mut bytes = sample(3, 32);
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        let tmp = write_tmp(&bytes);
        assert!(matches!(
            GgufFile::open(&tmp.0).unwrap_err(),
            ModelError::UnsupportedVersion { version: 1, .. }
        ));
    }

    #[test]
    fn truncation_anywhere_is_an_error_never_a_panic() {
        let bytes = sample(3, 32);
        for cut in 0..bytes.len() {
            let tmp = write_tmp(&bytes[..cut]);
            match GgufFile::open(&tmp.0) {
                Err(ModelError::Truncated { path, .. }) => assert_eq!(path, tmp.0),
                Err(e) => panic!("cut at {cut}: expected Truncated, got {e}"),
                Ok(_) => panic!("cut at {cut}: parsed a truncated file"),
            }
        }
    }

    #[test]
    fn truncated_tensor_data_names_the_tensor() {
        let bytes = sample(3, 32);
        let tmp = write_tmp(&bytes[..bytes.len() - 1]);
        let msg = GgufFile::open(&tmp.0).unwrap_err().to_string();
        assert!(msg.contains("t.q8") && msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn unknown_tensor_type_names_the_tensor() {
        let mut w = GgufWriter::default();
        w.tensor("weird", &[32], 99, vec![0; 64]);
        let tmp = write_tmp(&w.to_bytes());
        let err = GgufFile::open(&tmp.0).unwrap_err();
        assert!(
            matches!(&err, ModelError::UnknownTensorType { tensor, type_id: 99, .. } if tensor == "weird"),
            "{err}"
        );
    }

    #[test]
    fn missing_key_and_tensor_are_named() {
        let tmp = write_tmp(&sample(3, 32));
        let f = GgufFile::open(&tmp.0).unwrap();
        let msg = f.get("llama.block_count").unwrap_err().to_string();
        assert!(
            msg.contains("missing metadata key 'llama.block_count'"),
            "{msg}"
        );
        let msg = f.tensor("output.weight").unwrap_err().to_string();
        assert!(msg.contains("missing tensor 'output.weight'"), "{msg}");
    }
}
