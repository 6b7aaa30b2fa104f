//! The join-ready table for data platforms: one `nhs_number` column, sorted and distinct, as a
//! POS `.dat`, a CSV or a Parquet file, with its provenance in the Parquet file's metadata.

use crate::error::{Error, Result};
use crate::store::View;
use crate::time::{format_age, format_time};
use parquet::basic::{Compression, Encoding};
use parquet::column::writer::{get_column_writer, get_typed_column_writer, ColumnCloseResult};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::properties::WriterPropertiesPtr;
use parquet::file::writer::{SerializedFileWriter, SerializedPageWriter, TrackedWrite};
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnDescPtr;
use processor::files::AtomicFile;
use rayon::prelude::*;
use roaring::RoaringBitmap;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// Which list to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportList {
    /// The numbers that may be used (what the POS returned): fails closed when joined.
    Allowed,
    /// The numbers checked and not returned (derived): fails open when joined.
    OptedOut,
}

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// POS line format: `NNNNNNNNNN,` and CRLF per number, no header.
    Dat,
    /// A header `nhs_number`, then one number per line (CRLF).
    Csv,
    /// Apache Parquet, one required column `nhs_number`.
    Parquet,
}

/// The Parquet column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberType {
    /// A 10-character string (keeps leading zeros): the default.
    String,
    /// A 64-bit integer (join against zero-padded strings with care).
    Int64,
}

/// What an export wrote.
#[derive(Debug, Serialize)]
pub struct ExportSummary {
    /// The file written.
    pub out: String,
    /// The list.
    pub list: ExportList,
    /// The format.
    pub format: ExportFormat,
    /// Numbers written.
    pub numbers: u64,
    /// SHA-256 of the file written.
    pub sha256: String,
    /// Provenance (also in the Parquet file's key-value metadata).
    pub metadata: Vec<(String, String)>,
}

/// Rows per Parquet row group.
const ROW_GROUP: usize = 1 << 23;

/// Writes `list` of `view` to `out` (which must not exist; mode 0600, written under a temporary
/// name and renamed into place).
pub fn export(
    view: &View,
    list: ExportList,
    format: ExportFormat,
    number_type: NumberType,
    out: &Path,
) -> Result<ExportSummary> {
    let opted_out;
    let set: &RoaringBitmap = match list {
        ExportList::Allowed => &view.allowed,
        ExportList::OptedOut => {
            opted_out = &view.covered - &view.allowed;
            &opted_out
        }
    };
    let metadata = provenance(view, list);
    let mut file = AtomicFile::create(out)?;
    let written = match format {
        ExportFormat::Dat => write_lines(&mut file, set, b"", b",\r\n"),
        ExportFormat::Csv => write_lines(&mut file, set, b"nhs_number\r\n", b"\r\n"),
        ExportFormat::Parquet => write_parquet(&mut file, set, number_type, &metadata),
    };
    if let Err(e) = written {
        let _ = std::fs::remove_file(file.tmp());
        return Err(e);
    }
    file.commit()?;
    processor::files::sync_dir(&processor::files::parent_dir(out))?;
    Ok(ExportSummary {
        out: out.display().to_string(),
        list,
        format,
        numbers: set.len(),
        sha256: crate::import::sha256_file(out)?,
        metadata,
    })
}

/// The file-level facts a platform keeps with the table.
fn provenance(view: &View, list: ExportList) -> Vec<(String, String)> {
    let (from, to) = view.checked_range().unwrap_or_default();
    let ids: Vec<String> = view.batches.iter().map(|b| b.id.to_string()).collect();
    let local_ids: Vec<&str> = view.batches.iter().map(|b| b.local_id.as_str()).collect();
    let mut m = vec![
        (
            "list".to_string(),
            match list {
                ExportList::Allowed => "allowed: numbers the POS returned (no national data \
                                        opt-out at check time); keep rows with a semi-join"
                    .to_string(),
                ExportList::OptedOut => "opted-out: derived (requested minus returned); drop \
                                         rows with an anti-join, never NOT IN"
                    .to_string(),
            },
        ),
        ("as_of".into(), format_time(view.as_of)),
        ("max_age".into(), format_age(view.max_age)),
        ("checked_at_min".into(), from),
        ("checked_at_max".into(), to),
        (
            "environment".into(),
            view.environment.clone().unwrap_or_default(),
        ),
        ("batch_ids".into(), ids.join(",")),
        ("local_ids".into(), local_ids.join(",")),
        ("numbers_covered".into(), view.covered.len().to_string()),
        (
            "created_by".into(),
            concat!("ndop ", env!("CARGO_PKG_VERSION")).into(),
        ),
    ];
    m.retain(|(_, v)| !v.is_empty());
    m
}

/// The ten ASCII digits of the number whose prefix is `p` (prefixes come only from valid
/// numbers, so a check digit exists): worked out once, not as a number and then as text.
fn digits(p: u32) -> [u8; 10] {
    processor::nhs::digits_of_prefix(p).unwrap_or([b'0'; 10])
}

fn write_lines(
    file: &mut AtomicFile,
    set: &RoaringBitmap,
    header: &[u8],
    end: &[u8],
) -> Result<()> {
    let mut buf = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(header);
    for p in set {
        buf.extend_from_slice(&digits(p));
        buf.extend_from_slice(end);
        if buf.len() >= (1 << 20) - 16 {
            file.write(&buf)?;
            buf.clear();
        }
    }
    file.write(&buf)?;
    Ok(())
}

/// `std::io::Write` over an [`AtomicFile`], for the Parquet writer.
struct Sink<'a>(&'a mut AtomicFile);

impl std::io::Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_parquet(
    file: &mut AtomicFile,
    set: &RoaringBitmap,
    number_type: NumberType,
    metadata: &[(String, String)],
) -> Result<()> {
    let perr = |e: parquet::errors::ParquetError| {
        Error::Files(processor::Error::write(
            file_tmp_name(),
            std::io::Error::other(e.to_string()),
        ))
    };
    let (column, encoding) = match number_type {
        NumberType::String => ("required binary nhs_number (STRING);", Encoding::PLAIN),
        NumberType::Int64 => ("required int64 nhs_number;", Encoding::DELTA_BINARY_PACKED),
    };
    let schema =
        Arc::new(parse_message_type(&format!("message ndop_cache {{ {column} }}")).map_err(perr)?);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .set_encoding(encoding)
        .set_key_value_metadata(Some(
            metadata
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect(),
        ))
        .set_sorting_columns(Some(vec![parquet::file::metadata::SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]))
        .build();
    let props = Arc::new(props);
    let mut writer = SerializedFileWriter::new(Sink(file), schema, props.clone()).map_err(perr)?;
    let descr = writer.schema_descr().column(0);
    // Row groups are encoded (digits, statistics, Snappy) in parallel, one per core, each into
    // its own buffer, then appended to the file in order: groups are cut at fixed sizes and
    // encoded independently, so the file does not depend on the thread count; memory holds one
    // batch of groups (4 bytes a number, and the encoded chunks) at a time.
    let at_once = rayon::current_num_threads().max(1);
    let mut prefixes = set.iter().peekable();
    while prefixes.peek().is_some() {
        let groups: Vec<Vec<u32>> = (0..at_once)
            .map(|_| prefixes.by_ref().take(ROW_GROUP).collect::<Vec<u32>>())
            .filter(|g| !g.is_empty())
            .collect();
        let encoded: Vec<_> = groups
            .par_iter()
            .map(|g| encode_group(g, number_type, descr.clone(), props.clone()))
            .collect();
        for group in encoded {
            let (bytes, close) = group.map_err(perr)?;
            let mut row_group = writer.next_row_group().map_err(perr)?;
            row_group
                .append_column(&bytes::Bytes::from(bytes), close)
                .map_err(perr)?;
            row_group.close().map_err(perr)?;
        }
    }
    writer.close().map_err(perr)?;
    Ok(())
}

/// Values handed to the column writer at a time (bounds the `ByteArray`s alive at once).
const WRITE_BATCH: usize = 1 << 16;

/// One row group's column chunk, encoded into memory: its bytes and what the file writer needs
/// to splice them in (`append_column`).
fn encode_group(
    prefixes: &[u32],
    number_type: NumberType,
    descr: ColumnDescPtr,
    props: WriterPropertiesPtr,
) -> parquet::errors::Result<(Vec<u8>, ColumnCloseResult)> {
    let mut sink = TrackedWrite::new(Vec::new());
    let pages = Box::new(SerializedPageWriter::new(&mut sink));
    let column = get_column_writer(descr, props, pages);
    let close = match number_type {
        NumberType::String => {
            let mut column = get_typed_column_writer::<ByteArrayType>(column);
            let mut values: Vec<ByteArray> = Vec::with_capacity(WRITE_BATCH);
            for part in prefixes.chunks(WRITE_BATCH) {
                // one buffer for the batch's digits; each value is a slice of it
                let mut text = Vec::with_capacity(part.len() * 10);
                for &p in part {
                    text.extend_from_slice(&digits(p));
                }
                let text = bytes::Bytes::from(text);
                values.clear();
                values.extend(
                    (0..part.len()).map(|i| ByteArray::from(text.slice(i * 10..i * 10 + 10))),
                );
                column.write_batch(&values, None, None)?;
            }
            column.close()?
        }
        NumberType::Int64 => {
            let mut column = get_typed_column_writer::<Int64Type>(column);
            let mut values: Vec<i64> = Vec::with_capacity(WRITE_BATCH);
            for part in prefixes.chunks(WRITE_BATCH) {
                values.clear();
                values.extend(part.iter().map(|&p| crate::number_of_prefix(p) as i64));
                column.write_batch(&values, None, None)?;
            }
            column.close()?
        }
    };
    Ok((sink.into_inner()?, close))
}

fn file_tmp_name() -> &'static str {
    "the Parquet output"
}
