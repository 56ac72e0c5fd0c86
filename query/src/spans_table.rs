//! The `spans` and `metrics` tables: Parquet blocks plus the head buffer
//! of one tenant (spans and OTLP metric points take the same storage path,
//! see `tracelake_storage::Signal`).
//!
//! `scan` turns the pushed-down predicates into a [`SpanFilter`], asks
//! storage for a snapshot pruned by time range and trace id (blocks are
//! chosen from the in-memory metas, none is opened to decide), and plans:
//!
//! ```text
//! SpansScanExec: tenant=.., blocks=K/N, head_batches=H/M, trace_id=.., time_range=..
//!   UnionExec
//!     DataSourceExec (Parquet: the K blocks; row groups and pages pruned
//!                     again by statistics, page index and bloom filter)
//!     DataSourceExec (memory: the H head batches)
//! ```
//!
//! Pushdown is declared `Inexact`: DataFusion still filters every row, so
//! pruning can only skip data, never change an answer. `SpansScanExec` is a
//! pass-through whose only job is to show the pruning in `EXPLAIN`.
//!
//! The `metrics` table is planned the same way (`MetricsScanExec`), pruned
//! by a range on `time`; its files are metric blocks and, from before metric
//! points took the WAL path, one file per export request.

use std::fmt;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_adapter::PhysicalExprAdapterFactory;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use tracelake_storage::{BlockRef, Signal, SpanFilter, SpanReader, SpanSnapshot};

use crate::block_layout::BlockLayout;
use crate::filters::{span_filter, time_range};

/// The URL the block store is registered under in every session
/// ([`crate::session`]): the scans of blocks name their files under it.
pub static STORE_URL: LazyLock<ObjectStoreUrl> =
    LazyLock::new(|| ObjectStoreUrl::parse("tracelake://store/").expect("static url parses"));

/// One tenant's spans (or metric points), blocks and head together.
#[derive(Debug)]
pub struct SpansTable {
    reader: Arc<dyn SpanReader>,
    tenant: String,
    signal: Signal,
    /// Top-level text columns read as `Utf8View` (see [`Self::with_views`]).
    views: bool,
    /// Blocks and head batches outside this inclusive range are never read
    /// (see [`Self::within`]).
    window_ns: Option<(i64, i64)>,
}

impl SpansTable {
    pub fn new(reader: Arc<dyn SpanReader>, tenant: &str) -> Self {
        Self {
            reader,
            tenant: tenant.to_string(),
            signal: Signal::Spans,
            views: false,
            window_ns: None,
        }
    }

    /// The same rows with every top-level `Utf8` column read as `Utf8View`.
    ///
    /// Parquet's reader then decodes dictionary pages into views that point
    /// into the dictionary (a string of up to 12 bytes is held in the view
    /// itself) instead of copying each row's bytes, and equal dictionary
    /// entries give equal views within a batch. Internal plans that group
    /// by a text column over many spans (TraceQL metrics) read this; the
    /// `spans` table users query keeps `Utf8`.
    pub fn with_views(mut self) -> Self {
        self.views = true;
        self
    }

    /// The same rows, pruned to blocks and head batches that may hold
    /// spans within `[from_ns, to_ns]` whatever the query's filters say.
    ///
    /// A plan that checks start times itself (TraceQL metrics drop rows
    /// outside their intervals) then needs no time condition, which
    /// DataFusion would evaluate on every row of a block the window covers
    /// whole; rows of blocks that straddle the window's ends are read and
    /// must be dropped by the plan.
    pub fn within(mut self, from_ns: i64, to_ns: i64) -> Self {
        self.window_ns = Some((from_ns, to_ns));
        self
    }

    fn table_schema(&self) -> SchemaRef {
        let schema = self.signal.schema();
        if !self.views {
            return schema;
        }
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .map(|field| match field.data_type() {
                DataType::Utf8 => {
                    Arc::new(field.as_ref().clone().with_data_type(DataType::Utf8View))
                }
                _ => Arc::clone(field),
            })
            .collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// The `metrics` table: one tenant's OTLP metric points.
    pub fn metrics(reader: Arc<dyn SpanReader>, tenant: &str) -> Self {
        Self {
            signal: Signal::Metrics,
            ..Self::new(reader, tenant)
        }
    }
}

#[async_trait]
impl TableProvider for SpansTable {
    fn schema(&self) -> SchemaRef {
        self.table_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.table_schema();
        let (filter, snapshot) = match self.signal {
            Signal::Spans => {
                let mut filter = span_filter(filters);
                if let Some((from, to)) = self.window_ns {
                    filter.time_range_ns = Some(match filter.time_range_ns {
                        Some((low, high)) => (low.max(from), high.min(to)),
                        None => (from, to),
                    });
                }
                let snapshot = self.reader.snapshot(&self.tenant, &filter);
                (filter, snapshot)
            }
            Signal::Metrics => {
                let filter = SpanFilter {
                    time_range_ns: time_range(filters, &[tracelake_model::otlp_metrics::TIME]),
                    trace_ids: None,
                };
                let snapshot = self
                    .reader
                    .metrics_snapshot(&self.tenant, filter.time_range_ns);
                (filter, snapshot)
            }
        };
        let predicate = match conjunction(filters.to_vec()) {
            Some(expr) => {
                let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
                Some(state.create_physical_expr(expr, &df_schema)?)
            }
            None => None,
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !snapshot.blocks.is_empty() {
            let partitions = state.config().target_partitions().max(1);
            inputs.push(parquet_scan(
                self.signal,
                Arc::clone(&schema),
                &snapshot,
                predicate,
                projection,
                limit,
                partitions,
            )?);
        }
        if !snapshot.head.is_empty() {
            // Head rows come out already projected: a column the query does
            // not read (shared resource attributes) is never materialized.
            let projection_slice = projection.map(Vec::as_slice);
            let projected = project_schema(&schema, projection)?;
            let batches = snapshot
                .head
                .iter()
                .map(|rows| {
                    let batch = rows.project(projection_slice)?;
                    if self.views {
                        as_views(&batch, &projected)
                    } else {
                        Ok(batch)
                    }
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            inputs.push(MemorySourceConfig::try_new_exec(
                &[batches],
                projected,
                None,
            )?);
        }
        let input: Arc<dyn ExecutionPlan> = if inputs.is_empty() {
            Arc::new(EmptyExec::new(project_schema(&schema, projection)?))
        } else {
            UnionExec::try_new(inputs)?
        };
        let name = match self.signal {
            Signal::Spans => "SpansScanExec",
            Signal::Metrics => "MetricsScanExec",
        };
        Ok(Arc::new(SpansScanExec {
            input,
            summary: Arc::new(ScanSummary::new(name, &self.tenant, &filter, &snapshot)),
        }))
    }
}

/// `batch` cast to `schema` (its text columns to `Utf8View`).
fn as_views(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| datafusion::arrow::compute::cast(column, field.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

fn parquet_scan(
    signal: Signal,
    schema: SchemaRef,
    snapshot: &SpanSnapshot,
    predicate: Option<Arc<dyn PhysicalExpr>>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    // Filters are evaluated while decoding (late materialization): columns
    // a query only projects, like the 16-byte trace id, are decoded for
    // the rows that pass, not for every row.
    let mut source = ParquetSource::new(schema)
        .with_enable_page_index(true)
        .with_bloom_filter_on_read(true)
        .with_pushdown_filters(true)
        .with_reorder_filters(true);
    if let Some(predicate) = predicate {
        source = source.with_predicate(predicate);
    }
    // Span blocks of every layout read as the table (see `block_layout`).
    let adapter: Option<Arc<dyn PhysicalExprAdapterFactory>> = match signal {
        Signal::Spans => Some(Arc::new(BlockLayout)),
        Signal::Metrics => None,
    };
    parquet_files_exec(
        source,
        &snapshot.blocks,
        projection,
        limit,
        partitions,
        adapter,
    )
}

/// A Parquet scan of `files` in the block store, spread round-robin over
/// at most `partitions` file groups; shared by every table of the store.
pub(crate) fn parquet_files_exec(
    source: ParquetSource,
    files: &[BlockRef],
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
    partitions: usize,
    adapter: Option<Arc<dyn PhysicalExprAdapterFactory>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let group_count = partitions.clamp(1, files.len().max(1));
    let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); group_count];
    for (index, file) in files.iter().enumerate() {
        groups[index % group_count]
            .push(PartitionedFile::new(file.path.to_string(), file.size_bytes));
    }
    let mut builder = FileScanConfigBuilder::new(STORE_URL.clone(), Arc::new(source))
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .with_expr_adapter(adapter);
    for group in groups {
        builder = builder.with_file_group(FileGroup::new(group));
    }
    Ok(DataSourceExec::from_data_source(builder.build()))
}

/// What pruning chose, as `EXPLAIN` shows it.
#[derive(Debug)]
struct ScanSummary {
    name: &'static str,
    text: String,
}

impl ScanSummary {
    fn new(name: &'static str, tenant: &str, filter: &SpanFilter, snapshot: &SpanSnapshot) -> Self {
        let mut text = format!(
            "tenant={tenant}, blocks={}/{}, head_batches={}/{}",
            snapshot.blocks.len(),
            snapshot.total_blocks,
            snapshot.head.len(),
            snapshot.total_head_batches
        );
        match filter.trace_ids.as_deref() {
            Some([trace_id]) => text.push_str(&format!(", trace_id={trace_id}")),
            Some(trace_ids) => text.push_str(&format!(", trace_ids={}", trace_ids.len())),
            None => {}
        }
        if let Some((from, to)) = filter.time_range_ns {
            text.push_str(&format!(", time_range_ns=[{from}, {to}]"));
        }
        Self { name, text }
    }
}

/// Pass-through over the scan, there to make pruning visible in `EXPLAIN`.
#[derive(Debug)]
struct SpansScanExec {
    input: Arc<dyn ExecutionPlan>,
    summary: Arc<ScanSummary>,
}

impl DisplayAs for SpansScanExec {
    fn fmt_as(&self, format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match format {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "{}: {}", self.summary.name, self.summary.text)
            }
            DisplayFormatType::TreeRender => write!(f, "{}", self.summary.text),
        }
    }
}

impl ExecutionPlan for SpansScanExec {
    fn name(&self) -> &'static str {
        self.summary.name
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _visit: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.into_iter().next() else {
            return datafusion::common::internal_err!("SpansScanExec needs one child");
        };
        Ok(Arc::new(Self {
            input,
            summary: Arc::clone(&self.summary),
        }))
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
