//! A DataFusion session per request, scoped to one tenant.

use std::sync::{Arc, LazyLock};

use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use tracelake_storage::SpanReader;

use crate::Result;
use crate::derived_table::DerivedTableProvider;
use crate::spans_table::{STORE_URL, SpansTable};
use tracelake_storage::DerivedTable;

/// Bytes of Parquet footers and page indexes kept between queries.
const FOOTER_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// Parquet footers and page indexes of blocks, shared by every session of
/// the process, so a trace-by-id lookup does not re-read and re-parse the
/// footer of every block it opens. One cache for the whole process is
/// exact: block paths are ULIDs, never reused, and entries are checked
/// against the file's size.
static FOOTERS: LazyLock<Arc<FileMetadataCache>> = LazyLock::new(|| {
    Arc::new(DefaultCache::new(FOOTER_CACHE_BYTES).with_name("tracelake block footers"))
});

/// A session whose tables (`spans`, `metrics`, `edges`, `span_metrics`) show
/// `tenant`'s rows only, with the latency functions of [`crate::latency_udf`].
pub fn session_for_tenant(reader: Arc<dyn SpanReader>, tenant: &str) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, usize::from));
    let runtime = RuntimeEnvBuilder::new()
        .with_cache_manager(
            CacheManagerConfig::default()
                .with_file_metadata_cache(Some(Arc::clone(&FOOTERS)))
                .with_metadata_cache_limit(FOOTER_CACHE_BYTES),
        )
        .build_arc()?;
    let context = SessionContext::new_with_config_rt(config, runtime);
    context.register_object_store(STORE_URL.as_ref(), reader.object_store());
    context.register_table(
        "spans",
        Arc::new(SpansTable::new(Arc::clone(&reader), tenant)),
    )?;
    context.register_table(
        "metrics",
        Arc::new(SpansTable::metrics(Arc::clone(&reader), tenant)),
    )?;
    for table in [DerivedTable::Edges, DerivedTable::SpanMetrics] {
        context.register_table(
            table.name(),
            Arc::new(DerivedTableProvider::new(
                Arc::clone(&reader),
                tenant,
                table,
            )),
        )?;
    }
    crate::latency_udf::register(&context);
    Ok(context)
}

/// Runs `plan`, built on `tenant`'s `spans`, and collects its rows: the
/// shape of the internal queries (tag lists, Jaeger's lookups) that are
/// plans over spans alone.
pub(crate) async fn spans_rows<F>(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    plan: F,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>>
where
    F: FnOnce(
        datafusion::prelude::DataFrame,
    ) -> datafusion::error::Result<datafusion::prelude::DataFrame>,
{
    let context = session_for_tenant(reader, tenant)?;
    let spans = context.table("spans").await?;
    Ok(plan(spans)?.collect().await?)
}
