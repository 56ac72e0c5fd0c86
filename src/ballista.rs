//! `tracelake sql --ballista` (feature `ballista`): the query runs on
//! Apache DataFusion Ballista in standalone mode (scheduler and executor in
//! this process) over the store's Parquet files.
//!
//! tracelake's own `TableProvider`s cannot travel to a Ballista executor:
//! they prune by the in-memory block catalog and read collectors' heads,
//! neither of which exists where the plan runs. So the tables are given to
//! Ballista as plain Parquet listing tables over the *visible* files of the
//! catalog (blocks that compaction replaced, and orphans, are left out, so
//! each span is read once), in the same store: the store is registered in
//! the runtime Ballista's scheduler and executor share, under a
//! `tracelake://store` URL. What this leaves out: spans still in a
//! collector's head, the `tracelake_latency` aggregate and the per-query
//! pruning by time and trace id.
//!
//! `spans` is a view over the listing table of span blocks
//! (`tracelake_storage::layout::block_schema`): it derives the columns
//! blocks do not store (`duration_ns`) with plain expressions, which
//! travel in the plan; blocks that still store them are read through the
//! same view.

use std::sync::Arc;

use anyhow::Context;
use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use tracelake_storage::DerivedTable;
use tracelake_storage::open_bucket;
use tracelake_storage::{BlockRef, SpanFilter, SpanReader, Storage};

use tracelake_model::schema::col;

use crate::config::Config;

/// Where the store is registered for Ballista.
const STORE_URL: &str = "tracelake://store";

/// Runs `query` for `tenant` on Ballista; the answer's batches.
pub(crate) async fn run(
    config: &Config,
    tenant: &str,
    query: &str,
) -> anyhow::Result<Vec<RecordBatch>> {
    let store = crate::roles::block_store(config, false)?;
    let (storage, _) = Storage::open_reader(config.storage_config(), store)
        .await
        .context("opening storage")?;
    // The bucket itself, block paths under `prefix`: DataFusion's listing
    // matches the keys a `head` returns against the table's URLs.
    let (bucket, prefix) = open_bucket(&config.store_location()?, &config.data_dir, &config.s3)?;
    let root = if prefix.is_empty() {
        STORE_URL.to_string()
    } else {
        format!("{STORE_URL}/{prefix}")
    };
    let runtime = RuntimeEnvBuilder::new().build_arc()?;
    runtime.register_object_store(ObjectStoreUrl::parse(STORE_URL)?.as_ref(), bucket);
    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new_with_ballista())
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let context = SessionContext::standalone_with_state(state)
        .await
        .context("starting Ballista (standalone)")?;
    let blocks = storage.snapshot(tenant, &SpanFilter::default()).blocks;
    register(
        &context,
        &root,
        SPAN_BLOCKS,
        &blocks,
        tracelake_storage::layout::block_schema(),
    )?;
    register_spans_view(&context).await?;
    // Metric blocks, and the files of points written before they took the
    // WAL path.
    let metric_files = storage.metrics_snapshot(tenant, None).blocks;
    register(
        &context,
        &root,
        "metrics",
        &metric_files,
        tracelake_model::otlp_metrics::metrics_schema(),
    )?;
    for table in [DerivedTable::Edges, DerivedTable::SpanMetrics] {
        let files = storage.derived_files(tenant, table, None);
        register(&context, &root, table.name(), &files, table.schema())?;
    }
    let frame = context
        .sql_with_options(query, tracelake_query::sql::read_only_options())
        .await?;
    Ok(frame.collect().await?)
}

/// The listing table of span blocks, under the `spans` view.
const SPAN_BLOCKS: &str = "span_blocks";

/// Registers `spans`: the span table's columns over [`SPAN_BLOCKS`], the
/// ones blocks do not store derived as storage derives them
/// (`tracelake_storage::layout::to_spans`).
async fn register_spans_view(context: &SessionContext) -> anyhow::Result<()> {
    use datafusion::logical_expr::{Expr, cast, ident, lit, when};
    let nanos = |name: &str| cast(ident(name), datafusion::arrow::datatypes::DataType::Int64);
    let difference = nanos(col::END_TIME) - nanos(col::START_TIME);
    let duration = when(difference.clone().gt(lit(0i64)), difference).otherwise(lit(0i64))?;
    let columns: Vec<Expr> = tracelake_model::schema::span_schema()
        .fields()
        .iter()
        .map(|field| match field.name().as_str() {
            col::DURATION_NS => duration.clone().alias(col::DURATION_NS),
            name => ident(name),
        })
        .collect();
    let blocks = context.table_provider(SPAN_BLOCKS).await?;
    let view = context.read_table(blocks)?.select(columns)?;
    context.register_table("spans", view.into_view())?;
    Ok(())
}

/// Registers `files` as the Parquet listing table `name` (an empty table
/// when there are none).
fn register(
    context: &SessionContext,
    root: &str,
    name: &str,
    files: &[BlockRef],
    schema: SchemaRef,
) -> anyhow::Result<()> {
    if files.is_empty() {
        let empty = datafusion::datasource::empty::EmptyTable::new(schema);
        context.register_table(name, Arc::new(empty))?;
        return Ok(());
    }
    let urls = files
        .iter()
        .map(|file| ListingTableUrl::parse(format!("{root}/{}", file.path)))
        .collect::<Result<Vec<_>, _>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let table_config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    context.register_table(name, Arc::new(ListingTable::try_new(table_config)?))?;
    Ok(())
}
