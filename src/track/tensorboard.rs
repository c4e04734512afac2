//! A small writer of TensorBoard event files: TFRecord framing around `Event` protocol buffers,
//! encoded by hand (the few fields we write are listed with their field numbers below, from
//! tensorflow/core/util/event.proto and framework/summary.proto).
//!
//! TFRecord: u64 length (little-endian), masked CRC32C of those 8 bytes, the data, masked CRC32C of
//! the data. Mask: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, entry) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
            }
            *entry = c;
        }
        t
    });
    !data.iter().fold(!0u32, |crc, &b| table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8))
}

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord frame around `data`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// Protocol-buffer encoding of the few field kinds we need.
#[derive(Default)]
pub(crate) struct Pb(pub(crate) Vec<u8>);

impl Pb {
    /// A nested message (length-delimited field).
    pub(crate) fn msg(&mut self, field: u64, body: impl FnOnce(&mut Pb)) {
        let mut inner = Pb::default();
        body(&mut inner);
        self.bytes(field, &inner.0);
    }

    pub(crate) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    pub(crate) fn key(&mut self, field: u64, wire_type: u64) {
        self.varint((field << 3) | wire_type);
    }
    pub(crate) fn int(&mut self, field: u64, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }
    pub(crate) fn double(&mut self, field: u64, v: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn float(&mut self, field: u64, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, field: u64, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

/// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
fn event(wall_time: f64, step: i64, body: impl FnOnce(&mut Pb)) -> Vec<u8> {
    let mut e = Pb::default();
    e.double(1, wall_time);
    e.int(2, step);
    body(&mut e);
    e.0
}

/// Summary { repeated Value value = 1; } with one Value { string tag = 1; float simple_value = 2;
/// Image image = 4; }.
fn summary(tag: &str, value: impl FnOnce(&mut Pb)) -> Vec<u8> {
    let mut v = Pb::default();
    v.bytes(1, tag.as_bytes());
    value(&mut v);
    let mut s = Pb::default();
    s.bytes(1, &v.0);
    s.0
}

/// The frames of a TFRecord byte string (stops at a truncated tail, as a crash can leave).
pub fn frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 12 <= bytes.len() {
        let len = u64::from_le_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes")) as usize;
        let end = pos + 12 + len + 4;
        if end > bytes.len() {
            break;
        }
        out.push(&bytes[pos + 12..pos + 12 + len]);
        pos = end;
    }
    out
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

/// The `step` (field 2) of an encoded Event; 0 when absent, as protobuf defaults it.
pub fn event_step(event: &[u8]) -> Option<i64> {
    let mut pos = 0;
    let mut step = 0;
    while pos < event.len() {
        let key = read_varint(event, &mut pos)?;
        match (key >> 3, key & 7) {
            (2, 0) => step = read_varint(event, &mut pos)? as i64,
            (_, 0) => {
                read_varint(event, &mut pos)?;
            }
            (_, 1) => pos += 8,
            (_, 5) => pos += 4,
            (_, 2) => {
                let len = read_varint(event, &mut pos)? as usize;
                pos += len;
            }
            _ => return None,
        }
    }
    (pos == event.len()).then_some(step)
}

/// Drops, from every event file in `dir`, the records of steps after `step`: a run resumed from the
/// checkpoint at `step` logs those steps again, and TensorBoard would otherwise draw both. Returns the
/// number of records removed.
pub fn truncate_after(dir: &Path, step: i64) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if !path.file_name().and_then(|n| n.to_str()).is_some_and(is_event_file) {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let (kept, dropped): (Vec<&[u8]>, Vec<&[u8]>) =
            frames(&bytes).into_iter().partition(|e| event_step(e).is_some_and(|s| s <= step));
        if !dropped.is_empty() {
            super::atomic_write(&path, &kept.iter().flat_map(|e| frame(e)).collect::<Vec<u8>>())?;
            removed += dropped.len();
        }
    }
    Ok(removed)
}

/// The encoded Event of one scalar, as the writer writes it (public for the byte-for-byte comparison
/// with TensorBoard's own writer).
pub fn scalar_event(wall_time: f64, step: i64, tag: &str, value: f32) -> Vec<u8> {
    let s = summary(tag, |v| v.float(2, value));
    event(wall_time, step, |e| e.bytes(5, &s))
}

/// SummaryMetadata { PluginData plugin_data = 1 { string plugin_name = 1; bytes content = 2; } }.
fn plugin_metadata(v: &mut Pb, plugin: &str, content: &[u8]) {
    v.msg(9, |m| {
        m.msg(1, |pd| {
            pd.bytes(1, plugin.as_bytes());
            pd.bytes(2, content);
        })
    });
}

static FILE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// TensorBoard's name for event files: it reads every file whose name starts so.
const EVENT_PREFIX: &str = "events.out.tfevents.";

/// Whether a file name is an event file's.
pub fn is_event_file(name: &str) -> bool {
    name.starts_with(EVENT_PREFIX)
}

/// Appends events to one `events.out.tfevents.*` file in a run's folder.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// A new event file at exactly `path` (replaced if it exists): for the files that are rewritten
    /// whole, such as the HParams data.
    pub fn create_at(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = Self { path: path.to_path_buf(), out: BufWriter::new(file) };
        w.write(&event(super::unix_now(), 0, |e| e.bytes(3, b"brain.Event:2")))?;
        Ok(w)
    }

    /// Creates a new event file. The name carries the time, host, pid and a counter, so two writers
    /// opened in the same second never share a file.
    pub fn create(dir: &Path) -> Result<Self> {
        let now = super::unix_now();
        let name = format!(
            "{EVENT_PREFIX}{}.{}.{}.{}",
            now as u64,
            super::hostname(),
            std::process::id(),
            FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = Self { path, out: BufWriter::new(file) };
        w.write(&event(now, 0, |e| e.bytes(3, b"brain.Event:2")))?;
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: &[u8]) -> Result<()> {
        self.out.write_all(&frame(event)).with_context(|| format!("cannot write {}", self.path.display()))
    }

    pub fn add_scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        let s = summary(tag, |v| v.float(2, value as f32));
        self.write(&event(super::unix_now(), step, |e| e.bytes(5, &s)))
    }

    /// An encoded PNG. Image { int32 height = 1; int32 width = 2; int32 colorspace = 3;
    /// bytes encoded_image_string = 4; } with colorspace 1 = grey, 3 = RGB.
    pub fn add_png(&mut self, tag: &str, png: &[u8], height: u32, width: u32, channels: u32, step: i64) -> Result<()> {
        let mut img = Pb::default();
        img.int(1, height as i64);
        img.int(2, width as i64);
        img.int(3, channels as i64);
        img.bytes(4, png);
        let s = summary(tag, |v| v.bytes(4, &img.0));
        self.write(&event(super::unix_now(), step, |e| e.bytes(5, &s)))
    }

    /// Text for TensorBoard's text plugin (rendered as Markdown): a string tensor of shape [1].
    /// TensorProto { DataType dtype = 1 (DT_STRING = 7); TensorShapeProto tensor_shape = 2
    /// { repeated Dim dim = 2 { int64 size = 1 } }; repeated bytes string_val = 8; }.
    pub fn add_text(&mut self, tag: &str, markdown: &str, step: i64) -> Result<()> {
        let s = summary(tag, |v| {
            plugin_metadata(v, "text", b"");
            v.msg(8, |t| {
                t.int(1, 7);
                t.msg(2, |shape| shape.msg(2, |dim| dim.int(1, 1)));
                t.bytes(8, markdown.as_bytes());
            });
        });
        self.write(&event(super::unix_now(), step, |e| e.bytes(5, &s)))
    }

    /// A plugin's summary (e.g. the HParams plugin's `_hparams_/session_start_info`): its metadata
    /// carries the content, with an empty float tensor of shape [0] as the value.
    pub fn add_plugin_data(&mut self, tag: &str, plugin: &str, content: &[u8], step: i64) -> Result<()> {
        let s = summary(tag, |v| {
            plugin_metadata(v, plugin, content);
            v.msg(8, |t| {
                t.int(1, 1);
                t.msg(2, |shape| shape.msg(2, |dim| dim.int(1, 0)));
            });
        });
        self.write(&event(super::unix_now(), step, |e| e.bytes(5, &s)))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC-32C check value from RFC 3720 (iSCSI), appendix B.4: crc32c("123456789") = 0xE3069283;
    /// and 32 zero bytes give 0x8A9136AA.
    #[test]
    fn crc32c_matches_the_published_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    /// A scalar event, encoded by hand from the wire format: Event field 1 (double, tag 0x09),
    /// field 2 (varint, tag 0x10), field 5 (bytes, tag 0x2a) holding Summary field 1 (0x0a) holding
    /// Value { tag (0x0a) "a", simple_value (0x15) 1.0f = 00 00 80 3f }.
    #[test]
    fn scalar_event_bytes_follow_the_protobuf_wire_format() {
        let s = summary("a", |v| v.float(2, 1.0));
        let e = event(0.0, 3, |e| e.bytes(5, &s));
        let expected: Vec<u8> = [
            vec![0x09],
            vec![0; 8],
            vec![0x10, 0x03, 0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01, b'a', 0x15, 0x00, 0x00, 0x80, 0x3f],
        ]
        .concat();
        assert_eq!(e, expected);
        let f = frame(&e);
        assert_eq!(&f[..8], &(e.len() as u64).to_le_bytes());
        assert_eq!(f.len(), e.len() + 16);
    }

    #[test]
    fn resuming_drops_the_records_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        for step in 1..=10 {
            w.add_scalar("loss", step as f64, step).unwrap();
        }
        w.flush().unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let steps: Vec<i64> = frames(&bytes).iter().map(|e| event_step(e).unwrap()).collect();
        assert_eq!(steps, (0..=10).collect::<Vec<_>>(), "file version record at step 0, then 1..=10");
        assert_eq!(truncate_after(dir.path(), 6).unwrap(), 4);
        let bytes = std::fs::read(w.path()).unwrap();
        let steps: Vec<i64> = frames(&bytes).iter().map(|e| event_step(e).unwrap()).collect();
        assert_eq!(steps, (0..=6).collect::<Vec<_>>());
    }

    #[test]
    fn two_writers_in_one_folder_write_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        a.add_scalar("loss", 0.5, 1).unwrap();
        a.flush().unwrap();
        assert!(std::fs::metadata(a.path()).unwrap().len() > 0);
    }
}
