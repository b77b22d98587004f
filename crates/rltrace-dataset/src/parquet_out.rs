//! Parquet (section 7): the shape's columns under the same names as its JSONL fields; nested
//! values as UTF-8 columns with the JSON logical type; `reward` a nullable double; times UTC
//! microsecond timestamps; message lists as `list<struct<role, content>>` (what TRL and
//! Hugging Face `datasets` read as conversations); zstd; row groups of at most 65,536 rows.
//! Rows are gathered into record batches of at most [`BATCH_ROWS`] rows or [`BATCH_BYTES`]
//! bytes; the writer holds at most one row group.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, BooleanArray, ListArray, RecordBatch, StructArray};
use arrow_schema::extension::Json;
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use rltrace_core::dataset::{Message, Shape, Text, TrlRow};
use serde_json::Value;

use crate::{DatasetError, ROW_GROUP_ROWS, Row, RowWriter};

/// Rows of one record batch at most.
const BATCH_ROWS: usize = 8192;
/// Bytes of text in one record batch at most (before it is handed to the writer).
const BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Estimated encoded bytes of one row group at most (the writer holds one row group in memory).
pub(crate) const ROW_GROUP_BYTES: usize = 128 * 1024 * 1024;
/// Key of the manifest in the file's key-value metadata.
pub(crate) const MANIFEST_KEY: &str = "rltrace.manifest";

fn pq(e: impl std::fmt::Display) -> DatasetError {
    DatasetError::Parquet(e.to_string())
}

/// Message lists: offsets into role and content columns.
struct Messages {
    offsets: Vec<i32>,
    roles: StringBuilder,
    contents: StringBuilder,
}

impl Messages {
    fn new() -> Messages {
        Messages { offsets: vec![0], roles: StringBuilder::new(), contents: StringBuilder::new() }
    }

    fn push_items(&mut self, m: &[Message]) -> usize {
        let mut bytes = 0;
        for x in m {
            self.roles.append_value(&x.role);
            self.contents.append_value(&x.content);
            bytes += x.role.len() + x.content.len();
        }
        bytes
    }

    fn len(&self) -> i32 {
        *self.offsets.last().unwrap_or(&0)
    }

    fn struct_type() -> DataType {
        DataType::Struct(Fields::from(vec![Field::new("role", DataType::Utf8, false), Field::new("content", DataType::Utf8, false)]))
    }

    fn list_type() -> DataType {
        DataType::List(Arc::new(Field::new("item", Messages::struct_type(), false)))
    }

    fn finish_list(&mut self) -> Result<ListArray, DatasetError> {
        let DataType::Struct(fields) = Messages::struct_type() else { return Err(pq("message type")) };
        let s = StructArray::try_new(fields, vec![Arc::new(self.roles.finish()) as ArrayRef, Arc::new(self.contents.finish()) as ArrayRef], None).map_err(pq)?;
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        ListArray::try_new(Arc::new(Field::new("item", Messages::struct_type(), false)), offsets_buffer(offsets), Arc::new(s), None).map_err(pq)
    }
}

fn offsets_buffer(v: Vec<i32>) -> arrow_buffer::OffsetBuffer<i32> {
    arrow_buffer::OffsetBuffer::new(v.into())
}

/// One column being built.
enum Col {
    Str(StringBuilder),
    Json(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMicrosecondBuilder),
    /// A message list a row (`text=false`) or a string (`text=true`).
    Text(TextCol),
    /// A list of those a row.
    TextList(Vec<i32>, TextCol),
    BoolList(Vec<i32>, BooleanBuilder),
}

enum TextCol {
    Plain(StringBuilder),
    Msgs(Messages),
}

impl TextCol {
    fn new(text: bool) -> TextCol {
        if text { TextCol::Plain(StringBuilder::new()) } else { TextCol::Msgs(Messages::new()) }
    }

    fn push(&mut self, t: &Text) -> Result<usize, DatasetError> {
        match (self, t) {
            (TextCol::Plain(b), Text::Plain(s)) => {
                b.append_value(s);
                Ok(s.len())
            }
            (TextCol::Msgs(m), Text::Messages(items)) => {
                let n = m.push_items(items);
                let end = m.len() + i32::try_from(items.len()).map_err(pq)?;
                m.offsets.push(end);
                Ok(n)
            }
            _ => Err(DatasetError::Invalid("a prompt or completion of the other form".into())),
        }
    }

    fn count(&self) -> i32 {
        match self {
            TextCol::Plain(b) => i32::try_from(arrow_array::builder::ArrayBuilder::len(b)).unwrap_or(i32::MAX),
            TextCol::Msgs(m) => i32::try_from(m.offsets.len() - 1).unwrap_or(i32::MAX),
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            TextCol::Plain(_) => DataType::Utf8,
            TextCol::Msgs(_) => Messages::list_type(),
        }
    }

    fn finish(&mut self) -> Result<ArrayRef, DatasetError> {
        Ok(match self {
            TextCol::Plain(b) => Arc::new(b.finish()) as ArrayRef,
            TextCol::Msgs(m) => Arc::new(m.finish_list()?) as ArrayRef,
        })
    }
}

struct Column {
    name: &'static str,
    nullable: bool,
    col: Col,
}

pub(crate) struct ParquetWriter<W: Write + Send> {
    out: Option<W>,
    writer: Option<ArrowWriter<W>>,
    cols: Vec<Column>,
    rows: usize,
    bytes: usize,
    group_rows: usize,
    group_bytes: usize,
    batch_bytes: usize,
}

fn columns(shape: Shape, text: bool) -> Vec<Column> {
    let c = |name, nullable, col| Column { name, nullable, col };
    let ts = || Col::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC"));
    match shape {
        Shape::Triplets => vec![
            c("triplet_id", false, Col::Str(StringBuilder::new())),
            c("sequence_id", false, Col::Str(StringBuilder::new())),
            c("sequence_index", false, Col::I64(Int64Builder::new())),
            c("timestamp_utc", false, ts()),
            c("state", false, Col::Json(StringBuilder::new())),
            c("action", false, Col::Json(StringBuilder::new())),
            c("reward", true, Col::F64(Float64Builder::new())),
            c("reward_sources", false, Col::Json(StringBuilder::new())),
            c("reward_source", true, Col::Str(StringBuilder::new())),
            c("reward_assigned_at", true, ts()),
            c("propensity", true, Col::F64(Float64Builder::new())),
            c("sampling_probability", true, Col::F64(Float64Builder::new())),
            c("trace_id", false, Col::Str(StringBuilder::new())),
            c("span_id", false, Col::Str(StringBuilder::new())),
        ],
        Shape::AgentLightning => vec![
            c("prompt", false, Col::Json(StringBuilder::new())),
            c("response", false, Col::Json(StringBuilder::new())),
            c("reward", true, Col::F64(Float64Builder::new())),
            c("metadata", false, Col::Json(StringBuilder::new())),
        ],
        Shape::TrlSft if text => vec![c("text", false, Col::Str(StringBuilder::new()))],
        Shape::TrlSft => vec![c("messages", false, Col::Text(TextCol::new(false)))],
        Shape::TrlPromptCompletion => vec![
            c("prompt", false, Col::Text(TextCol::new(text))),
            c("completion", false, Col::Text(TextCol::new(text))),
            c("reward", true, Col::F64(Float64Builder::new())),
        ],
        Shape::TrlKto => vec![
            c("prompt", false, Col::Text(TextCol::new(text))),
            c("completion", false, Col::Text(TextCol::new(text))),
            c("label", false, Col::Bool(BooleanBuilder::new())),
        ],
        Shape::TrlDpo => vec![
            c("prompt", false, Col::Text(TextCol::new(text))),
            c("chosen", false, Col::Text(TextCol::new(text))),
            c("rejected", false, Col::Text(TextCol::new(text))),
        ],
        Shape::TrlStepwise => vec![
            c("prompt", false, Col::Text(TextCol::new(text))),
            c("completions", false, Col::TextList(vec![0], TextCol::new(text))),
            c("labels", false, Col::BoolList(vec![0], BooleanBuilder::new())),
        ],
    }
}

/// A value for one column of one row.
enum Val<'a> {
    Str(&'a str),
    OptStr(Option<&'a str>),
    Json(&'a str),
    JsonOwned(String),
    I64(i64),
    F64(Option<f64>),
    Bool(bool),
    Ts(Option<i64>),
    Text(&'a Text),
    TextList(&'a [Text]),
    BoolList(&'a [bool]),
}

impl Column {
    fn push(&mut self, v: Val<'_>) -> Result<usize, DatasetError> {
        let bad = || DatasetError::Invalid(format!("column {}: value of another type", self.name));
        Ok(match (&mut self.col, v) {
            (Col::Str(b), Val::Str(s)) | (Col::Json(b), Val::Json(s)) => {
                b.append_value(s);
                s.len()
            }
            (Col::Json(b), Val::JsonOwned(s)) => {
                b.append_value(&s);
                s.len()
            }
            (Col::Str(b), Val::OptStr(s)) => {
                b.append_option(s);
                s.map_or(0, str::len)
            }
            (Col::I64(b), Val::I64(n)) => {
                b.append_value(n);
                8
            }
            (Col::F64(b), Val::F64(x)) => {
                b.append_option(x);
                8
            }
            (Col::Bool(b), Val::Bool(x)) => {
                b.append_value(x);
                1
            }
            (Col::Ts(b), Val::Ts(x)) => {
                b.append_option(x);
                8
            }
            (Col::Text(t), Val::Text(x)) => t.push(x)?,
            (Col::TextList(offsets, t), Val::TextList(xs)) => {
                let mut n = 0;
                for x in xs {
                    n += t.push(x)?;
                }
                offsets.push(t.count());
                n
            }
            (Col::BoolList(offsets, b), Val::BoolList(xs)) => {
                for x in xs {
                    b.append_value(*x);
                }
                offsets.push(i32::try_from(arrow_array::builder::ArrayBuilder::len(b)).map_err(pq)?);
                xs.len()
            }
            _ => return Err(bad()),
        })
    }

    fn field_and_array(&mut self) -> Result<(Field, ArrayRef), DatasetError> {
        let array: ArrayRef = match &mut self.col {
            Col::Str(b) | Col::Json(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
            Col::Text(t) => t.finish()?,
            Col::TextList(offsets, t) => {
                let item = Field::new("item", t.data_type(), false);
                let values = t.finish()?;
                let offsets = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::try_new(Arc::new(item), offsets_buffer(offsets), values, None).map_err(pq)?)
            }
            Col::BoolList(offsets, b) => {
                let values: BooleanArray = b.finish();
                let offsets = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::try_new(Arc::new(Field::new("item", DataType::Boolean, false)), offsets_buffer(offsets), Arc::new(values), None).map_err(pq)?)
            }
        };
        let mut field = Field::new(self.name, array.data_type().clone(), self.nullable);
        if matches!(self.col, Col::Json(_)) {
            field = field.with_extension_type(Json::default());
        }
        Ok((field, array))
    }
}

impl<W: Write + Send> ParquetWriter<W> {
    pub(crate) fn new(out: W, shape: Shape, text: bool) -> Result<ParquetWriter<W>, DatasetError> {
        ParquetWriter::bounded(out, shape, text, ROW_GROUP_ROWS, ROW_GROUP_BYTES, BATCH_BYTES)
    }

    /// A writer with other bounds (tests). The row group byte bound is checked between record
    /// batches, so a row group holds at most `group_bytes` plus one batch.
    pub(crate) fn bounded(out: W, shape: Shape, text: bool, group_rows: usize, group_bytes: usize, batch_bytes: usize) -> Result<ParquetWriter<W>, DatasetError> {
        if group_rows == 0 || group_bytes == 0 || batch_bytes == 0 {
            return Err(pq("row group and batch bounds must be positive"));
        }
        Ok(ParquetWriter { out: Some(out), writer: None, cols: columns(shape, text), rows: 0, bytes: 0, group_rows, group_bytes, batch_bytes })
    }

    fn push_row(&mut self, vals: Vec<Val<'_>>) -> Result<(), DatasetError> {
        if vals.len() != self.cols.len() {
            return Err(DatasetError::Invalid("row of another shape".into()));
        }
        for (c, v) in self.cols.iter_mut().zip(vals) {
            self.bytes += c.push(v)?;
        }
        self.rows += 1;
        if self.rows >= BATCH_ROWS || self.bytes >= self.batch_bytes {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), DatasetError> {
        let mut fields = Vec::with_capacity(self.cols.len());
        let mut arrays = Vec::with_capacity(self.cols.len());
        for c in &mut self.cols {
            let (f, a) = c.field_and_array()?;
            fields.push(f);
            arrays.push(a);
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(pq)?;
        if self.writer.is_none() {
            let out = self.out.take().ok_or_else(|| pq("writer already finished"))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(pq)?))
                .set_max_row_group_row_count(Some(self.group_rows))
                .set_max_row_group_bytes(Some(self.group_bytes))
                .set_created_by(format!("rltrace {}", crate::RLTRACE_VERSION))
                .build();
            let options = ArrowWriterOptions::new().with_properties(props).with_skip_arrow_metadata(true);
            self.writer = Some(ArrowWriter::try_new_with_options(out, schema, options).map_err(pq)?);
        }
        if batch.num_rows() > 0
            && let Some(w) = self.writer.as_mut()
        {
            w.write(&batch).map_err(pq)?;
        }
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }
}

fn sources_json(t: &rltrace_core::export::TripletView) -> String {
    let m: std::collections::BTreeMap<&str, f64> = t.effective.sources.iter().map(|(k, v)| (k.as_str(), v.value)).collect();
    serde_json::to_string(&m).unwrap_or_else(|_| "{}".into())
}

fn json_text(v: &Value, key: &str) -> String {
    v.get(key).map(Value::to_string).unwrap_or_else(|| "null".into())
}

impl<W: Write + Send> RowWriter for ParquetWriter<W> {
    fn row(&mut self, row: Row<'_>) -> Result<(), DatasetError> {
        match row {
            Row::Triplet(t) => {
                let sources = sources_json(t);
                self.push_row(vec![
                    Val::Str(&t.triplet_id),
                    Val::Str(&t.sequence_id),
                    Val::I64(t.sequence_index),
                    Val::Ts(Some(t.timestamp)),
                    Val::Json(&t.state),
                    Val::Json(&t.action),
                    Val::F64(t.effective.reward),
                    Val::JsonOwned(sources),
                    Val::OptStr(t.effective.newest_source.as_deref()),
                    Val::Ts(t.effective.newest_at),
                    Val::F64(t.propensity),
                    Val::F64(t.sampling_probability),
                    Val::Str(&t.trace_id),
                    Val::Str(&t.span_id),
                ])
            }
            Row::AgentLightning(v) => self.push_row(vec![
                Val::JsonOwned(json_text(&v, "prompt")),
                Val::JsonOwned(json_text(&v, "response")),
                Val::F64(v.get("reward").and_then(Value::as_f64)),
                Val::JsonOwned(json_text(&v, "metadata")),
            ]),
            Row::Trl(r) => match &r {
                TrlRow::Sft { messages } => {
                    let t = Text::Messages(messages.clone());
                    self.push_row(vec![Val::Text(&t)])
                }
                TrlRow::SftText { text } => self.push_row(vec![Val::Str(text)]),
                TrlRow::PromptCompletion { prompt, completion, reward } => self.push_row(vec![Val::Text(prompt), Val::Text(completion), Val::F64(*reward)]),
                TrlRow::Kto { prompt, completion, label } => self.push_row(vec![Val::Text(prompt), Val::Text(completion), Val::Bool(*label)]),
                TrlRow::Dpo { prompt, chosen, rejected } => self.push_row(vec![Val::Text(prompt), Val::Text(chosen), Val::Text(rejected)]),
                TrlRow::Stepwise { prompt, completions, labels } => {
                    self.push_row(vec![Val::Text(prompt), Val::TextList(completions), Val::BoolList(labels)])
                }
            },
        }
    }

    fn finish(mut self: Box<Self>, manifest: Option<&Value>) -> Result<(), DatasetError> {
        self.flush_batch()?;
        let mut w = self.writer.take().ok_or_else(|| pq("no writer"))?;
        if let Some(m) = manifest {
            w.append_key_value_metadata(KeyValue::new(MANIFEST_KEY.to_string(), m.to_string()));
        }
        let mut out = w.into_inner().map_err(pq)?;
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stepwise_file_has_the_declared_columns() {
        let mut buf = Vec::new();
        let mut w = Box::new(ParquetWriter::new(&mut buf, Shape::TrlStepwise, false).expect("writer"));
        let p = Text::Messages(vec![Message { role: "user".into(), content: "q".into() }]);
        let a = Text::Messages(vec![Message { role: "assistant".into(), content: "a".into() }]);
        w.row(Row::Trl(TrlRow::Stepwise { prompt: p.clone(), completions: vec![a.clone(), a], labels: vec![true, false] })).expect("row");
        w.finish(Some(&serde_json::json!({"shape": "trl-stepwise"}))).expect("finish");
        assert_eq!(&buf[..4], b"PAR1");
    }

    fn row_groups(shape: Shape, rows: &[TrlRow], group_bytes: usize, batch_bytes: usize) -> Vec<i64> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let mut f = tempfile::tempfile().expect("tempfile");
        let mut w = Box::new(ParquetWriter::bounded(&mut f, shape, true, ROW_GROUP_ROWS, group_bytes, batch_bytes).expect("writer"));
        for r in rows {
            w.row(Row::Trl(r.clone())).expect("row");
        }
        w.finish(None).expect("finish");
        let reader = SerializedFileReader::new(f).expect("a Parquet file");
        reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect()
    }

    #[test]
    fn row_groups_hold_at_most_65536_rows() {
        let row = TrlRow::SftText { text: "x".into() };
        assert_eq!(row_groups(Shape::TrlSft, &vec![row.clone(); ROW_GROUP_ROWS], ROW_GROUP_BYTES, BATCH_BYTES), vec![65_536]);
        assert_eq!(row_groups(Shape::TrlSft, &vec![row; ROW_GROUP_ROWS + 1], ROW_GROUP_BYTES, BATCH_BYTES), vec![65_536, 1]);
    }

    #[test]
    fn row_groups_are_bounded_in_bytes() {
        // Incompressible rows of 64 KiB, a record batch each: with a bound of 256 KiB a row group
        // holds about four.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let rows: Vec<TrlRow> = (0..32)
            .map(|_| {
                let text: String = (0..65_536)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        char::from(b'a' + (x % 26) as u8)
                    })
                    .collect();
                TrlRow::SftText { text }
            })
            .collect();
        let groups = row_groups(Shape::TrlSft, &rows, 256 * 1024, 64 * 1024);
        assert_eq!(groups.iter().sum::<i64>(), 32);
        assert!(groups.len() >= 6 && groups.iter().all(|n| *n <= 5), "{groups:?}");
    }
}
