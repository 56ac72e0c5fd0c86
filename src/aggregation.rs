//! Starts the service-map aggregation over a storage engine, for `serve`
//! and `import` alike: every batch stored through the returned writer is
//! also counted into the `edges` and `span_metrics` tables.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracelake_collector::aggregate::{AggregateConfig, AggregatingWriter, Aggregator};
use tracelake_storage::Sharing;
use tracelake_storage::{DerivedWriter, SpanWriter, Storage};

/// How often the aggregation expires waits and writes closed minutes.
const TICK: Duration = Duration::from_secs(1);

/// The running aggregation.
pub(crate) struct Aggregation {
    pub(crate) aggregator: Arc<Aggregator>,
    /// Writes through storage and feeds the aggregation.
    pub(crate) writer: Arc<dyn SpanWriter>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Aggregation {
    /// Aggregates spans stored through `storage`; the rows go to the store
    /// unless other processes share it ([`MetricsOnly`]).
    pub(crate) fn start(storage: &Storage, config: AggregateConfig) -> Self {
        let derived: Arc<dyn DerivedWriter> = match storage.config().sharing {
            Sharing::Exclusive => Arc::new(storage.clone()),
            Sharing::Shared { .. } => Arc::new(MetricsOnly),
        };
        let aggregator = Aggregator::new(config);
        let (writer, batches) = AggregatingWriter::new(
            Arc::new(storage.clone()),
            Arc::clone(&derived),
            Arc::clone(&aggregator),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Arc::clone(&aggregator).run(batches, derived, TICK, async move {
                let _ = stopped.await;
            }),
        );
        Self {
            aggregator,
            writer: Arc::new(writer),
            stop,
            task,
        }
    }

    /// Counts what was stored so far and writes every row held; call after
    /// the last append and before the storage's final flush.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "service map aggregation task failed");
        }
    }
}

/// A collector (or `import`) on a shared store keeps its aggregation for
/// `/metrics` only:
/// the store's service-map rows are computed by the compactor from every
/// collector's spans (a call whose two sides reached different collectors
/// is paired there), so the collector's own rows are dropped.
#[derive(Debug)]
struct MetricsOnly;

#[async_trait::async_trait]
impl DerivedWriter for MetricsOnly {
    async fn write_derived(
        &self,
        _tenant: &str,
        _table: tracelake_storage::DerivedTable,
        _batch: datafusion::arrow::array::RecordBatch,
    ) -> tracelake_storage::Result<()> {
        Ok(())
    }

    async fn set_derived_complete_before(
        &self,
        _complete_before_ns: i64,
    ) -> tracelake_storage::Result<()> {
        Ok(())
    }

    fn lower_derived_complete_before(&self, _minute_ns: i64) {}
}
