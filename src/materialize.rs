//! The compactor's service-map rows on a shared store.
//!
//! With several collectors, the two spans of one call may reach different
//! collectors, so no collector can pair them as spans arrive. The store
//! holds every collector's spans, so the compactor computes the `edges`
//! and `span_metrics` rows of settled minutes from them, with the same
//! recompute the query side uses for minutes without rows
//! (`tracelake_query::derived_rows`, `Source::Raw`), writes them, and moves
//! the store's watermark past them. Queriers answer minutes before the
//! watermark from those rows and recompute later ones from spans, so a
//! service map is complete across collectors either way.
//!
//! A minute is settled `cluster.derived_settle` after it ended: by then
//! every collector has flushed its spans (collectors flush every
//! `flush.max_age`). Spans that reach the store later than that are in the
//! raw spans (`source=raw` recomputes them) but not in the rows. One
//! compactor at a time does this, claiming the `derived` window as it
//! claims compaction windows. A compactor that dies between writing a
//! minute's rows and the watermark leaves them to be written again by the
//! next pass, so those minutes count twice in the precomputed rows.

use std::sync::Arc;
use std::time::Duration;

use tracelake_model::derived::{NANOS_PER_MINUTE, minute_of};
use tracelake_query::derived_rows::{Source, derived_rows};
use tracelake_storage::Coordination;
use tracelake_storage::run_every;
use tracelake_storage::{DerivedCatalog, DerivedTable};
use tracelake_storage::{DerivedWriter, SpanReader, Storage};

/// The most minutes one pass computes (a pass reads their spans).
const MAX_MINUTES_PER_PASS: i64 = 60;

/// Computes settled minutes every `every` until `shutdown` resolves.
pub(crate) async fn run(
    storage: Storage,
    coordination: Coordination,
    settle: Duration,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    run_every(tokio::time::interval(every), shutdown, || async {
        match materialize_once(&storage, &coordination, settle).await {
            Ok(0) => {}
            Ok(minutes) => tracing::info!(minutes, "service-map rows computed from stored spans"),
            Err(error) => tracing::warn!(%error, "computing service-map rows failed; retrying"),
        }
    })
    .await;
}

/// One pass: the minutes computed.
pub(crate) async fn materialize_once(
    storage: &Storage,
    coordination: &Coordination,
    settle: Duration,
) -> anyhow::Result<i64> {
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let settle_ns = i64::try_from(settle.as_nanos()).unwrap_or(i64::MAX);
    let settled_before = minute_of(now_ns.saturating_sub(settle_ns));
    let blocks = storage.blocks();
    let Some(earliest) = blocks.iter().map(|block| block.min_start_ns).min() else {
        return Ok(0);
    };
    let Some(claim) = coordination.claim("derived").await? else {
        return Ok(0);
    };
    let outcome = async {
        // The store's watermark, not this process's copy: another
        // compactor may have moved it since the last refresh.
        let mut from = DerivedCatalog::read_watermark(&storage.object_store()).await?;
        if from == 0 {
            from = minute_of(earliest);
        }
        if from >= settled_before {
            return Ok(0);
        }
        let to = settled_before.min(from + MAX_MINUTES_PER_PASS * NANOS_PER_MINUTE);
        let mut tenants: Vec<String> = blocks.iter().map(|block| block.tenant.clone()).collect();
        tenants.sort();
        tenants.dedup();
        let reader: Arc<dyn SpanReader> = Arc::new(storage.clone());
        for tenant in tenants {
            let rows = derived_rows(Arc::clone(&reader), &tenant, (from, to - 1), Source::Raw)
                .await
                .map_err(|error| anyhow::anyhow!("recomputing {tenant}: {error}"))?;
            if !rows.edges.is_empty() {
                storage
                    .write_derived(&tenant, DerivedTable::Edges, rows.edges.to_batch(&tenant)?)
                    .await?;
            }
            if !rows.spans.is_empty() {
                storage
                    .write_derived(
                        &tenant,
                        DerivedTable::SpanMetrics,
                        rows.spans.to_batch(&tenant)?,
                    )
                    .await?;
            }
        }
        storage.set_derived_complete_before(to).await?;
        anyhow::Ok((to - from) / NANOS_PER_MINUTE)
    }
    .await;
    coordination.release(claim).await?;
    outcome
}
