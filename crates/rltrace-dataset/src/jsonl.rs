//! JSONL: one JSON object a line; with the manifest, a last line `{"manifest": {...}}`.

use std::io::Write;

use rltrace_core::export::write_triplet_json;
use serde_json::Value;

use crate::{DatasetError, Row, RowWriter};

/// Bytes gathered before they are handed to the output.
const CHUNK: usize = 64 * 1024;

#[derive(serde::Serialize)]
struct AgentLightningLine<'a> {
    prompt: &'a Value,
    response: &'a Value,
    reward: Option<f64>,
    metadata: &'a Value,
}

pub(crate) struct JsonlWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> JsonlWriter<W> {
    pub(crate) fn new(out: W) -> JsonlWriter<W> {
        JsonlWriter { out, buf: Vec::with_capacity(CHUNK * 2) }
    }

    fn spill(&mut self) -> Result<(), DatasetError> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write + Send> RowWriter for JsonlWriter<W> {
    fn row(&mut self, row: Row<'_>) -> Result<(), DatasetError> {
        let r = match row {
            Row::Triplet(t) => write_triplet_json(&mut self.buf, t).map_err(|e| DatasetError::Invalid(format!("triplet {}: {e}", t.triplet_id))),
            Row::AgentLightning(v) => {
                // The fields in the order of Agent Lightning's Triplet model.
                let line = AgentLightningLine { prompt: &v["prompt"], response: &v["response"], reward: v["reward"].as_f64(), metadata: &v["metadata"] };
                serde_json::to_writer(&mut self.buf, &line).map_err(|e| DatasetError::Invalid(e.to_string()))
            }
            Row::Trl(r) => serde_json::to_writer(&mut self.buf, &r).map_err(|e| DatasetError::Invalid(e.to_string())),
        };
        r?;
        self.buf.push(b'\n');
        if self.buf.len() >= CHUNK {
            self.spill()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, manifest: Option<&Value>) -> Result<(), DatasetError> {
        if let Some(m) = manifest {
            serde_json::to_writer(&mut self.buf, &serde_json::json!({ "manifest": m })).map_err(|e| DatasetError::Invalid(e.to_string()))?;
            self.buf.push(b'\n');
        }
        self.spill()?;
        self.out.flush()?;
        Ok(())
    }
}
