//! Reading span blocks of every layout as the `spans` table
//! (`tracelake_storage::layout`): the Parquet scan asks this adapter, once
//! per file, to rewrite the plan's expressions against the file's columns.
//! A table column the file does not store is replaced by the expression
//! that derives it from the columns the file has; a file that stores it
//! is read as it is. Everything else is DataFusion's default adapter
//! (casts, column positions).
//!
//! Predicates go through the same rewrite, so a filter on a derived column
//! is evaluated on the derived values and never against a missing column
//! read as null. It does not prune row groups by statistics (an arithmetic
//! expression has none), and the table's pushdown is `Inexact`, so rows
//! are filtered again above the scan.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CaseExpr, CastExpr, Column, Literal};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use tracelake_model::schema::col;

/// The adapter factory of the `spans` table's Parquet scan.
#[derive(Debug)]
pub(crate) struct BlockLayout;

impl PhysicalExprAdapterFactory for BlockLayout {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        Ok(Arc::new(BlockLayoutAdapter {
            inner: DefaultPhysicalExprAdapterFactory
                .create(logical_file_schema, Arc::clone(&physical_file_schema))?,
            physical: physical_file_schema,
        }))
    }
}

#[derive(Debug)]
struct BlockLayoutAdapter {
    inner: Arc<dyn PhysicalExprAdapter>,
    physical: SchemaRef,
}

impl PhysicalExprAdapter for BlockLayoutAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        let derives_duration = self.physical.index_of(col::DURATION_NS).is_err();
        let expr = if derives_duration {
            expr.transform(|expr| match expr.downcast_ref::<Column>() {
                Some(column) if column.name() == col::DURATION_NS => {
                    Ok(Transformed::yes(duration(&self.physical)?))
                }
                _ => Ok(Transformed::no(expr)),
            })
            .data()?
        } else {
            expr
        };
        self.inner.rewrite(expr)
    }
}

/// `duration_ns` as blocks that do not store it derive it:
/// `CASE WHEN end - start > 0 THEN end - start ELSE 0 END`, the times as
/// nanoseconds (`tracelake_storage::layout::to_spans` computes the same).
fn duration(physical: &SchemaRef) -> Result<Arc<dyn PhysicalExpr>> {
    let nanos = |name: &str| -> Result<Arc<dyn PhysicalExpr>> {
        let column = Arc::new(Column::new_with_schema(name, physical)?);
        Ok(Arc::new(CastExpr::new(column, DataType::Int64, None)))
    };
    let difference: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        nanos(col::END_TIME)?,
        Operator::Minus,
        nanos(col::START_TIME)?,
    ));
    let zero: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(ScalarValue::Int64(Some(0))));
    let positive: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        Arc::clone(&difference),
        Operator::Gt,
        Arc::clone(&zero),
    ));
    Ok(Arc::new(CaseExpr::try_new(
        None,
        vec![(positive, difference)],
        Some(zero),
    )?))
}
