//! Starts the service-map aggregation over a storage engine, for `serve`
//! and `import` alike: every batch stored through the returned writer is
//! also counted into the `edges` and `span_metrics` tables.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracelake_collector::aggregate::{AggregateConfig, AggregatingWriter, Aggregator};
use tracelake_storage::{SpanWriter, Storage};

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
    pub(crate) fn start(storage: &Storage, config: AggregateConfig) -> Self {
        let aggregator = Aggregator::new(config);
        let (writer, batches) = AggregatingWriter::new(
            Arc::new(storage.clone()),
            Arc::new(storage.clone()),
            Arc::clone(&aggregator),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(Arc::clone(&aggregator).run(
            batches,
            Arc::new(storage.clone()),
            TICK,
            async move {
                let _ = stopped.await;
            },
        ));
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
