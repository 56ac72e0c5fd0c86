//! The `edges` and `span_metrics` tables: Parquet files of one tenant
//! written beside the spans ([`tracelake_storage::DerivedTable`]), pruned by
//! hour from predicates on the time column (`minute`) before any file is
//! opened. (The `metrics` table reads blocks and head like `spans`, see
//! [`crate::spans_table`].)
//!
//! ```text
//! DataSourceExec (Parquet: the files whose hour overlaps the minute range)
//! ```
//!
//! Pushdown is `Inexact` (DataFusion filters every row again). Rows the
//! aggregation still holds in memory are not here; the service-map service
//! recomputes minutes after the watermark from raw spans.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::error::Result;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use tracelake_storage::DerivedTable;
use tracelake_storage::SpanReader;

use crate::filters::time_range;
use crate::spans_table::parquet_files_exec;

/// One tenant's rows of one derived table.
#[derive(Debug)]
pub struct DerivedTableProvider {
    reader: Arc<dyn SpanReader>,
    tenant: String,
    table: DerivedTable,
}

impl DerivedTableProvider {
    pub fn new(reader: Arc<dyn SpanReader>, tenant: &str, table: DerivedTable) -> Self {
        Self {
            reader,
            tenant: tenant.to_string(),
            table,
        }
    }
}

#[async_trait]
impl TableProvider for DerivedTableProvider {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
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
        let schema = self.table.schema();
        let range = time_range(filters, &[self.table.time_column()]);
        let files = self.reader.derived_files(&self.tenant, self.table, range);
        if files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(project_schema(
                &schema, projection,
            )?)));
        }
        let mut source = ParquetSource::new(Arc::clone(&schema));
        if let Some(expr) = conjunction(filters.to_vec()) {
            let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
            source = source.with_predicate(state.create_physical_expr(expr, &df_schema)?);
        }
        parquet_files_exec(
            source,
            &files,
            projection,
            limit,
            state.config().target_partitions(),
            None,
        )
    }
}
