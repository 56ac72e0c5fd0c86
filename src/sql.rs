//! `tracelake sql "<query>"`: read-only SQL over the data dir, printed as a
//! table (or JSON rows with `--json`). It opens the storage itself, so it
//! runs while no server uses the data dir; against a running server, use
//! its `/v1/sql` endpoint.

use std::sync::Arc;

use anyhow::Context;
use datafusion::arrow::util::pretty::pretty_format_batches;
use tracelake_storage::{SpanReader, Storage, StorageError};

use crate::config::Config;

pub(crate) async fn sql(
    config: Config,
    tenant: &str,
    query: &str,
    json: bool,
) -> anyhow::Result<()> {
    tracelake_model::validate_tenant(tenant)?;
    let store = crate::roles::block_store(&config, true)?;
    if config.store_location()? != tracelake_storage::StoreLocation::File {
        // A shared store: read it as a querier does, beside running nodes.
        let (storage, _) = Storage::open_reader(config.storage_config(), store)
            .await
            .context("opening storage")?;
        return print_answer(Arc::new(storage), tenant, query, json).await;
    }
    let (storage, _) = match Storage::open(config.storage_config(), store).await {
        Ok(opened) => opened,
        Err(StorageError::Locked(path)) => anyhow::bail!(
            "{} is in use by a running tracelake: send the query to its /v1/sql endpoint instead \
             (curl --data '<query>' http://<host>:3200/v1/sql)",
            path.display()
        ),
        Err(error) => return Err(error).context("opening storage"),
    };
    print_answer(Arc::new(storage), tenant, query, json).await
}

async fn print_answer(
    reader: Arc<dyn SpanReader>,
    tenant: &str,
    query: &str,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let answer = tracelake_query::sql::run_query(
            reader,
            tenant,
            query,
            tracelake_query::sql::QUERY_TIMEOUT,
        )
        .await?;
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let answer = tracelake_query::sql::run_query_batches(
        reader,
        tenant,
        query,
        tracelake_query::sql::QUERY_TIMEOUT,
    )
    .await?;
    println!("{}", pretty_format_batches(&answer.batches)?);
    if answer.truncated {
        eprintln!(
            "(only the first {} rows are shown)",
            tracelake_query::sql::MAX_ROWS
        );
    }
    Ok(())
}
