//! `pgveil demo`: a throwaway PostgreSQL with sample data, pgveil in front of
//! it, and a short tour of what an application sees through the proxy.
pub mod data;
mod table;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures_util::SinkExt;
use pgveil_testkit::{AuthMethod, ClusterOptions, PgCluster};

use crate::app::RunningProxy;
use crate::config::{Config, UpstreamTlsMode};

const LOGISTICS_SCHEMA: &str = include_str!("../../../examples/logistics/schema.sql");
const APP_USER: &str = "dispatch_app";
const APP_PASSWORD: &str = "demo-only-password";

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seed of the sample-data generator (the same seed gives the same data).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of customers to generate (shipments and waybills follow).
    #[arg(long, default_value_t = 200)]
    pub customers: usize,
    /// Keep PostgreSQL and pgveil running after the tour until Ctrl-C, to try psql.
    #[arg(long)]
    pub keep: bool,
}

/// Run the demo; PostgreSQL is stopped and its directory removed on every exit path.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(crate::config::LogFormat::Text, "warn");
    println!("pgveil demo: starting a throwaway PostgreSQL ...");
    let cluster = match start_cluster() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("pgveil demo: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = tour(&cluster, &args) => r,
            _ = tokio::signal::ctrl_c() => {
                println!("\ninterrupted; cleaning up");
                Ok(())
            }
        }
    });
    drop(runtime);
    drop(cluster); // stops PostgreSQL, removes the temp dir
    outcome.map(|()| ExitCode::SUCCESS)
}

fn start_cluster() -> anyhow::Result<PgCluster> {
    let cluster = PgCluster::start(ClusterOptions {
        auth: AuthMethod::ScramSha256,
        users: vec![(APP_USER.into(), APP_PASSWORD.into())],
        ..Default::default()
    })?;
    Ok(cluster)
}

async fn tour(cluster: &PgCluster, args: &DemoArgs) -> anyhow::Result<()> {
    let loaded = load_sample_data(cluster, args).await?;
    println!("{loaded}");

    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        metrics_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    config.upstream.host = cluster.host().into();
    config.upstream.port = cluster.port();
    config.upstream.tls_mode = UpstreamTlsMode::Disable;
    let proxy = RunningProxy::start(config).await?;
    println!(
        "pgveil listening on {} in front of PostgreSQL on {}:{}\n",
        proxy.addr,
        cluster.host(),
        cluster.port()
    );

    let conninfo = format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname=postgres sslmode=disable",
        proxy.addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .context("connecting through pgveil")?;
    tokio::spawn(conn);
    println!("Connected through pgveil as {APP_USER} (SCRAM-SHA-256 relayed to PostgreSQL).\n");
    run_queries(&client).await?;
    show_metrics(&proxy).await;

    if args.keep {
        println!("\nStill running. Try:  psql \"{conninfo}\"\nPress Ctrl-C to stop and clean up.");
        std::future::pending::<()>().await;
    }
    drop(client);
    proxy.shutdown().await;
    println!("\nDone. PostgreSQL stopped and its temp directory removed.");
    Ok(())
}

/// Create the schema and load generated rows with COPY, as the superuser, directly.
async fn load_sample_data(cluster: &PgCluster, args: &DemoArgs) -> anyhow::Result<String> {
    let started = Instant::now();
    let (admin, conn) = tokio_postgres::connect(
        &cluster.superuser_conninfo("postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .context("connecting to the demo PostgreSQL")?;
    tokio::spawn(conn);
    admin
        .batch_execute(LOGISTICS_SCHEMA)
        .await
        .context("loading examples/logistics/schema.sql")?;
    let dataset = data::logistics(args.seed, args.customers);
    let mut rows = 0usize;
    for (statement, payload) in dataset.copy_payloads() {
        let sink = admin.copy_in(statement.as_str()).await?;
        futures_util::pin_mut!(sink);
        rows += payload.lines().count();
        sink.send(Bytes::from(payload)).await?;
        sink.finish().await?;
    }
    for sql in dataset.post_load_sql() {
        admin.batch_execute(&sql).await?;
    }
    admin
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_USER}; \
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_USER}"
        ))
        .await?;
    Ok(format!(
        "Loaded examples/logistics/schema.sql and {rows} generated rows (seed {}, {} customers) in {:.1}s.",
        args.seed,
        args.customers,
        started.elapsed().as_secs_f64()
    ))
}

const QUERIES: &[(&str, &str)] = &[
    (
        "Shipments by status",
        "SELECT status, count(*) AS shipments, round(avg(weight_kg), 1) AS avg_kg \
         FROM public.shipments GROUP BY status ORDER BY shipments DESC",
    ),
    (
        "Five customers (these columns are what the policy will protect)",
        "SELECT name, id_card, phone, address FROM public.customers ORDER BY id LIMIT 5",
    ),
    (
        "Latest waybills with consignee and driver",
        "SELECT w.waybill_no, w.consignee_name, w.consignee_phone, w.driver_phone, s.destination_city \
         FROM public.waybills w JOIN public.shipments s ON s.id = w.shipment_id \
         ORDER BY w.created_at DESC LIMIT 5",
    ),
];

async fn run_queries(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    for (title, sql) in QUERIES {
        let messages = client.simple_query(sql).await?;
        println!("== {title}\n   {sql}\n");
        println!("{}", table::render(&messages));
    }
    // The extended protocol, with a parameter, through the same session.
    let stmt = client
        .prepare("SELECT count(*) FROM public.waybills WHERE waybill_no LIKE $1")
        .await?;
    let international: i64 = client.query_one(&stmt, &[&"E%"]).await?.get(0);
    let domestic: i64 = client.query_one(&stmt, &[&"SF%"]).await?.get(0);
    println!(
        "== Prepared statement, reused: {domestic} domestic SF waybills, {international} international UPU S10 waybills\n"
    );
    Ok(())
}

async fn show_metrics(proxy: &RunningProxy) {
    let text = String::from_utf8_lossy(&proxy.metrics.render()).to_string();
    println!(
        "== A few of pgveil's Prometheus metrics (http://{}/metrics)",
        proxy
            .metrics_addr
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    for line in text.lines().filter(|l| {
        !l.starts_with('#')
            && !l.ends_with(" 0")
            && (l.starts_with("pgveil_queries_total")
                || l.starts_with("pgveil_connections")
                || l.starts_with("pgveil_client_"))
    }) {
        println!("   {line}");
    }
}
