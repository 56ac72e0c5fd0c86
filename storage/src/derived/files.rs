//! Derived tables on the store, beside the span blocks:
//!
//! ```text
//! tenants/{tenant}/{table}/{yyyy-mm-dd}/{hh}/{ulid}.parquet   table = edges | span_metrics | metrics (older releases)
//! derived/watermark.json   {"version":"1","complete_before_ns":...}
//! ```
//!
//! A derived file is written in one `put`, so it is visible whole or not at
//! all; its hour is that of the rows' `minute` (a flush writes one file per
//! tenant, table and hour). The watermark says up to which minute the
//! streaming aggregation has written every row it will write (late spans
//! may still add rows to older minutes): the query side answers minutes
//! before it from these files and recomputes later minutes from raw spans.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::{BlockRef, Result, StorageError};
use tracelake_model::derived::{col, edges_schema, span_metrics_schema};

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
const WATERMARK_PATH: &str = "derived/watermark.json";

/// The tables written beside the spans: what the streaming aggregation
/// derives, and OTLP metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DerivedTable {
    Edges,
    SpanMetrics,
    /// OTLP metric points as older releases wrote them, one file per export
    /// request and hour: read and expired, no longer written (points are in
    /// metric blocks now, `signal`).
    Metrics,
}

impl DerivedTable {
    pub const ALL: [Self; 3] = [Self::Edges, Self::SpanMetrics, Self::Metrics];

    /// The table name in SQL and in store paths.
    pub fn name(self) -> &'static str {
        match self {
            Self::Edges => "edges",
            Self::SpanMetrics => "span_metrics",
            Self::Metrics => "metrics",
        }
    }

    /// The time column rows are filed (and pruned) by.
    pub fn time_column(self) -> &'static str {
        match self {
            Self::Edges | Self::SpanMetrics => col::MINUTE,
            Self::Metrics => "time",
        }
    }

    pub fn schema(self) -> datafusion::arrow::datatypes::SchemaRef {
        match self {
            Self::Edges => edges_schema(),
            Self::SpanMetrics => span_metrics_schema(),
            Self::Metrics => tracelake_model::otlp_metrics::metrics_schema(),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|table| table.name() == name)
    }
}

#[derive(Debug, Clone)]
struct DerivedFile {
    hour: i64,
    block: BlockRef,
}

/// Where the derived files are, in memory; loaded from the store listing.
#[derive(Debug, Default)]
pub struct DerivedCatalog {
    files: RwLock<HashMap<(String, DerivedTable), Vec<DerivedFile>>>,
    complete_before_ns: RwLock<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum WatermarkFile {
    #[serde(rename = "1")]
    V1 { complete_before_ns: i64 },
}

/// `tenants/{tenant}/{table}/{yyyy-mm-dd}/{hh}/{ulid}.parquet` -> parts.
fn parse_path(path: &str) -> Option<(String, DerivedTable, i64)> {
    let parts: Vec<&str> = path.split('/').collect();
    let ["tenants", tenant, table, date, hour, file] = parts.as_slice() else {
        return None;
    };
    let table = DerivedTable::parse(table)?;
    if !file.ends_with(".parquet") {
        return None;
    }
    let hour_of_day: u32 = hour.parse().ok()?;
    let start = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(hour_of_day, 0, 0)?
        .and_utc();
    let hour = start.timestamp_nanos_opt()?.div_euclid(NANOS_PER_HOUR);
    Some((tenant.to_string(), table, hour))
}

impl DerivedCatalog {
    /// The derived files among `objects` (a listing of `tenants/`), and the
    /// watermark from the store.
    pub async fn load(store: &Arc<dyn ObjectStore>, objects: &[ObjectMeta]) -> Result<Self> {
        let catalog = Self::default();
        for object in objects {
            if let Some((tenant, table, hour)) = parse_path(object.location.as_ref()) {
                catalog.add(&tenant, table, hour, object.location.clone(), object.size);
            }
        }
        match store.get(&Path::from(WATERMARK_PATH)).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                match serde_json::from_slice::<WatermarkFile>(&bytes) {
                    Ok(WatermarkFile::V1 { complete_before_ns }) => {
                        *catalog.complete_before_ns.write() = complete_before_ns;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "unreadable derived watermark; derived rows are recomputed from spans")
                    }
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        Ok(catalog)
    }

    /// The watermark as stored now (0 when none is).
    pub async fn read_watermark(store: &Arc<dyn ObjectStore>) -> Result<i64> {
        match store.get(&Path::from(WATERMARK_PATH)).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                match serde_json::from_slice::<WatermarkFile>(&bytes) {
                    Ok(WatermarkFile::V1 { complete_before_ns }) => Ok(complete_before_ns),
                    Err(error) => Err(StorageError::Corrupt(format!("derived watermark: {error}"))),
                }
            }
            Err(object_store::Error::NotFound { .. }) => Ok(0),
            Err(error) => Err(error.into()),
        }
    }

    /// Takes `loaded`'s files, with `watermark` (read before the listing
    /// the files came from, so every file it covers is among them).
    pub fn replace_with(&self, loaded: Self, watermark: i64) {
        *self.files.write() = loaded.files.into_inner();
        *self.complete_before_ns.write() = watermark;
    }

    /// Applies a reader's changes from the change log
    /// (`changes`): files added (once) and removed, and the
    /// watermark read before them.
    pub fn apply(&self, added: &[(String, u64)], removed: &HashSet<String>, watermark: i64) {
        if !removed.is_empty() {
            for files in self.files.write().values_mut() {
                files.retain(|file| !removed.contains(file.block.path.as_ref()));
            }
        }
        for (path, size) in added {
            let Some((tenant, table, hour)) = parse_path(path) else {
                continue;
            };
            let known = self
                .files
                .read()
                .get(&(tenant.clone(), table))
                .is_some_and(|files| files.iter().any(|file| file.block.path.as_ref() == path));
            if !known && !removed.contains(path) {
                self.add(&tenant, table, hour, Path::from(path.as_str()), *size);
            }
        }
        *self.complete_before_ns.write() = watermark;
    }

    fn add(&self, tenant: &str, table: DerivedTable, hour: i64, path: Path, size: u64) {
        self.files
            .write()
            .entry((tenant.to_string(), table))
            .or_default()
            .push(DerivedFile {
                hour,
                block: BlockRef {
                    path,
                    size_bytes: size,
                    span_count: 0,
                },
            });
    }

    /// Drops, and returns, the files of every table of tenants whose data
    /// ends before the cutoff `period_of(tenant)` gives (ns since the
    /// epoch; `None`: kept): a file goes once its whole hour is before it.
    pub fn expire(&self, cutoff_of: impl Fn(&str) -> Option<i64>) -> Vec<Path> {
        let mut expired = Vec::new();
        for ((tenant, _), files) in self.files.write().iter_mut() {
            let Some(cutoff) = cutoff_of(tenant) else {
                continue;
            };
            files.retain(|file| {
                let keep = (file.hour + 1) * NANOS_PER_HOUR > cutoff;
                if !keep {
                    expired.push(file.block.path.clone());
                }
                keep
            });
        }
        expired
    }

    /// Files of `tenant`'s `table` whose hour overlaps `[from, to]` (ns).
    pub fn find(
        &self,
        tenant: &str,
        table: DerivedTable,
        time_range_ns: Option<(i64, i64)>,
    ) -> Vec<BlockRef> {
        let files = self.files.read();
        let Some(files) = files.get(&(tenant.to_string(), table)) else {
            return Vec::new();
        };
        files
            .iter()
            .filter(|file| match time_range_ns {
                Some((from, to)) => {
                    file.hour >= from.div_euclid(NANOS_PER_HOUR)
                        && file.hour <= to.div_euclid(NANOS_PER_HOUR)
                }
                None => true,
            })
            .map(|file| file.block.clone())
            .collect()
    }

    pub fn complete_before_ns(&self) -> i64 {
        *self.complete_before_ns.read()
    }

    /// Writes `batch` (rows of `table` for `tenant`) as one file per hour.
    /// Returns the files written, with their sizes.
    pub async fn write(
        &self,
        store: &Arc<dyn ObjectStore>,
        tenant: &str,
        table: DerivedTable,
        batch: RecordBatch,
    ) -> Result<Vec<(String, u64)>> {
        let mut written = Vec::new();
        if batch.num_rows() == 0 {
            return Ok(written);
        }
        let tenant_owned = tenant.to_string();
        let encoded =
            tokio::task::spawn_blocking(move || encode_by_hour(&tenant_owned, table, &batch))
                .await
                .map_err(|error| {
                    StorageError::Corrupt(format!("derived encode task: {error}"))
                })??;
        for (hour, path, bytes) in encoded {
            let size = bytes.len() as u64;
            let location = Path::from(path.as_str());
            store.put(&location, PutPayload::from(bytes)).await?;
            written.push((path, size));
            self.add(tenant, table, hour, location, size);
        }
        Ok(written)
    }

    /// Records that every row of minutes before `complete_before_ns` is
    /// written.
    pub async fn set_complete_before(
        &self,
        store: &Arc<dyn ObjectStore>,
        complete_before_ns: i64,
    ) -> Result<()> {
        if complete_before_ns == self.complete_before_ns() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&WatermarkFile::V1 { complete_before_ns })
            .map_err(|error| StorageError::Corrupt(format!("watermark: {error}")))?;
        store
            .put(&Path::from(WATERMARK_PATH), PutPayload::from(bytes))
            .await?;
        *self.complete_before_ns.write() = complete_before_ns;
        Ok(())
    }

    /// Moves the watermark back to `minute_ns` if it is later (in memory:
    /// the next [`DerivedCatalog::set_complete_before`] persists).
    pub fn lower_complete_before(&self, minute_ns: i64) {
        let mut current = self.complete_before_ns.write();
        *current = (*current).min(minute_ns);
    }
}

fn encode_by_hour(
    tenant: &str,
    table: DerivedTable,
    batch: &RecordBatch,
) -> Result<Vec<(i64, String, Vec<u8>)>> {
    let minutes = batch
        .column_by_name(table.time_column())
        .and_then(|array| array.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| {
            StorageError::Corrupt(format!(
                "{} batch without {}",
                table.name(),
                table.time_column()
            ))
        })?;
    let mut rows_by_hour: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
    for row in 0..minutes.len() {
        let hour = minutes.value(row).div_euclid(NANOS_PER_HOUR);
        rows_by_hour.entry(hour).or_default().push(row as u32);
    }
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut encoded = Vec::new();
    for (hour, rows) in rows_by_hour {
        let part = take_record_batch(batch, &UInt32Array::from(rows))?;
        let mut bytes = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut bytes, table.schema(), Some(properties.clone()))?;
        writer.write(&part)?;
        writer.close()?;
        let hour_start = DateTime::<Utc>::from_timestamp_nanos(hour * NANOS_PER_HOUR);
        let path = format!(
            "tenants/{tenant}/{}/{}/{}.parquet",
            table.name(),
            hour_start.format("%Y-%m-%d/%H"),
            ulid::Ulid::new()
        );
        encoded.push((hour, path, bytes));
    }
    Ok(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_tenant_table_and_hour() {
        let (tenant, table, hour) =
            parse_path("tenants/acme/edges/2026-11-29/05/01JABC.parquet").unwrap();
        assert_eq!((tenant.as_str(), table), ("acme", DerivedTable::Edges));
        let expected = chrono::NaiveDate::from_ymd_opt(2026, 11, 29)
            .unwrap()
            .and_hms_opt(5, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_nanos_opt()
            .unwrap();
        assert_eq!(hour * NANOS_PER_HOUR, expected);
        assert!(parse_path("tenants/acme/spans/2026-11-29/05/01JABC.parquet").is_none());
        assert!(parse_path("tenants/acme/edges/2026-11-29/05/x.meta.json").is_none());
        assert!(parse_path("tenants/acme/edges/nonsense/05/x.parquet").is_none());
    }
}
