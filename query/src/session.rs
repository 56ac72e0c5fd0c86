//! A DataFusion session per request, scoped to one tenant.

use std::sync::{Arc, LazyLock};

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::{SessionConfig, SessionContext};
use tracelake_storage::SpanReader;

use crate::Result;
use crate::derived_table::DerivedTableProvider;
use crate::spans_table::SpansTable;
use tracelake_storage::derived::DerivedTable;

/// The URL the block store is registered under in every session.
pub static STORE_URL: LazyLock<ObjectStoreUrl> =
    LazyLock::new(|| ObjectStoreUrl::parse("tracelake://store/").expect("static url parses"));

/// A session whose tables (`spans`, `edges`, `span_metrics`) show
/// `tenant`'s rows only, with the latency functions of [`crate::latency_udf`].
pub fn session_for_tenant(reader: Arc<dyn SpanReader>, tenant: &str) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, usize::from));
    let context = SessionContext::new_with_config(config);
    context.register_object_store(STORE_URL.as_ref(), reader.object_store());
    context.register_table(
        "spans",
        Arc::new(SpansTable::new(Arc::clone(&reader), tenant)),
    )?;
    for table in DerivedTable::ALL {
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
