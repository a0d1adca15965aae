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
use crate::output::outln;

const LOGISTICS_SCHEMA: &str = include_str!("../../../examples/logistics/schema.sql");
const LOGISTICS_POLICY: &str = include_str!("../../../examples/logistics/policy.yaml");
const APP_USER: &str = "dispatch_app";
/// The other logins of the tour, with the policy roles they get.
const OTHER_USERS: &[&str] = &["support_app", "bi_reader"];
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
    outln!("pgveil demo: starting a throwaway PostgreSQL ...");
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
                outln!("\ninterrupted; cleaning up");
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
    outln!("{loaded}");

    // The policy of examples/logistics, a fresh keyring, and the protected columns encrypted
    // in place by `pgveil encrypt`'s code.
    let dir = cluster.dir();
    let policy_path = dir.join("policy.yaml");
    std::fs::write(&policy_path, LOGISTICS_POLICY)?;
    let keyring_path = dir.join("pgveil.keys");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    pgveil_policy::keyring::Keyring::generate(now)?.save(&keyring_path, true)?;
    let state = crate::enforce::PolicyState::load(&policy_path, &keyring_path)
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut admin = superuser(cluster).await?;
    let sealed: u64 = crate::migrate::encrypt(
        &mut admin,
        &state.policy,
        &state.keys,
        &crate::migrate::Options::default(),
    )
    .await?
    .iter()
    .map(|s| s.changed)
    .sum();
    outln!(
        "Encrypted {sealed} values in the columns examples/logistics/policy.yaml marks `encrypt:` (AES-256-GCM envelopes).\n"
    );

    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        metrics_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    config.upstream.host = cluster.host().into();
    config.upstream.port = cluster.port();
    config.upstream.tls_mode = UpstreamTlsMode::Disable;
    config.enforcement = Some(crate::config::EnforcementConfig::new(
        policy_path,
        keyring_path,
        "postgres",
    ));
    let proxy = RunningProxy::start(config).await?;
    outln!(
        "pgveil listening on {} in front of PostgreSQL on {}:{}, enforcing examples/logistics/policy.yaml\n",
        proxy.addr,
        cluster.host(),
        cluster.port()
    );

    let conninfo = |user: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} password={APP_PASSWORD} dbname=postgres sslmode=disable",
            proxy.addr.port()
        )
    };
    let connect = |user: &'static str| {
        let info = conninfo(user);
        async move {
            let (client, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls)
                .await
                .with_context(|| format!("connecting through pgveil as {user}"))?;
            tokio::spawn(conn);
            anyhow::Ok(client)
        }
    };
    let dispatcher = connect(APP_USER).await?;
    let support = connect("support_app").await?;
    let analyst = connect("bi_reader").await?;
    outln!("Connected through pgveil as {APP_USER}, support_app and bi_reader (SCRAM-SHA-256 relayed to PostgreSQL).\n");
    run_queries(&dispatcher, &support, &analyst, &admin).await?;
    show_metrics(&proxy).await;

    if args.keep {
        outln!(
            "\nStill running. Try:  psql \"{}\"  (or user=support_app, user=bi_reader)\nPress Ctrl-C to stop and clean up.",
            conninfo(APP_USER)
        );
        std::future::pending::<()>().await;
    }
    drop((dispatcher, support, analyst));
    proxy.shutdown().await;
    outln!("\nDone. PostgreSQL stopped and its temp directory removed.");
    Ok(())
}

async fn superuser(cluster: &PgCluster) -> anyhow::Result<tokio_postgres::Client> {
    let (admin, conn) = tokio_postgres::connect(
        &cluster.superuser_conninfo("postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .context("connecting to the demo PostgreSQL")?;
    tokio::spawn(conn);
    Ok(admin)
}

/// Create the schema and load generated rows with COPY, as the superuser, directly.
async fn load_sample_data(cluster: &PgCluster, args: &DemoArgs) -> anyhow::Result<String> {
    let started = Instant::now();
    let admin = superuser(cluster).await?;
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
    for user in OTHER_USERS {
        admin
            .batch_execute(&format!(
                "CREATE ROLE {user} LOGIN PASSWORD '{APP_PASSWORD}'"
            ))
            .await?;
    }
    for user in std::iter::once(&APP_USER).chain(OTHER_USERS) {
        admin
            .batch_execute(&format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {user}; \
                 GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {user}"
            ))
            .await?;
    }
    Ok(format!(
        "Loaded examples/logistics/schema.sql and {rows} generated rows (seed {}, {} customers) in {:.1}s.",
        args.seed,
        args.customers,
        started.elapsed().as_secs_f64()
    ))
}

const CUSTOMERS: &str =
    "SELECT name, id_card, phone, address FROM public.customers ORDER BY id LIMIT 5";

async fn show(title: &str, client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<()> {
    outln!("== {title}\n   {sql}\n");
    match client.simple_query(sql).await {
        Ok(messages) => outln!("{}", table::render(&messages)),
        Err(e) => match e.as_db_error() {
            Some(db) => {
                outln!("   ERROR {}: {}", db.code().code(), db.message());
                if let Some(h) = db.hint() {
                    outln!("   HINT: {h}");
                }
                outln!();
            }
            None => return Err(e.into()),
        },
    }
    Ok(())
}

async fn run_queries(
    dispatcher: &tokio_postgres::Client,
    support: &tokio_postgres::Client,
    analyst: &tokio_postgres::Client,
    admin: &tokio_postgres::Client,
) -> anyhow::Result<()> {
    show(
        "Shipments by status (no protected data: forwarded untouched)",
        dispatcher,
        "SELECT status, count(*) AS shipments, round(avg(weight_kg), 1) AS avg_kg \
         FROM public.shipments GROUP BY status ORDER BY shipments DESC",
    )
    .await?;
    show(
        "Five customers, as the dispatcher (dispatch_app: contacts in clear, ID numbers masked)",
        dispatcher,
        CUSTOMERS,
    )
    .await?;
    show(
        "The same customers, as customer service (support_app: masked)",
        support,
        "SELECT name, phone, address FROM public.customers ORDER BY id LIMIT 5",
    )
    .await?;
    show(
        "As the analyst (bi_reader: stable pseudonyms that still join, names masked)",
        analyst,
        "SELECT name, id_card, phone FROM public.customers ORDER BY id LIMIT 5",
    )
    .await?;
    show(
        "Customer service asks for ID card numbers: refused",
        support,
        CUSTOMERS,
    )
    .await?;
    show(
        "Customer service tries to learn names by sorting: refused",
        support,
        "SELECT id FROM public.customers ORDER BY name LIMIT 5",
    )
    .await?;
    show(
        "What PostgreSQL itself holds (read directly, bypassing pgveil)",
        admin,
        "SELECT name, left(id_card, 40) || '...' AS id_card, left(phone, 40) || '...' AS phone \
         FROM public.customers ORDER BY id LIMIT 3",
    )
    .await?;
    show(
        "The dispatcher registers a customer through pgveil: plain SQL, encrypted on the way in",
        dispatcher,
        "INSERT INTO public.customers (name, id_card, phone, email, address) \
         VALUES ('张伟', '110101199003074514', '13900001234', 'zhang.wei@example.cn', \
         '北京市海淀区中关村大街1号院3号楼') RETURNING id, name, phone, address",
    )
    .await?;
    show(
        "What PostgreSQL stored for that customer (read directly): envelopes only",
        admin,
        "SELECT name, left(phone, 40) || '...' AS phone, left(address, 40) || '...' AS address \
         FROM public.customers WHERE name = '张伟'",
    )
    .await?;
    admin.batch_execute("ANALYZE public.customers").await?;
    show(
        "Customer service finds the customer by phone (lookup allowed; the result stays masked)",
        support,
        "SELECT id, name, phone FROM public.customers WHERE phone = '13900001234'",
    )
    .await?;
    show(
        "How the server runs that lookup: the literal became the deterministic ciphertext, on the index",
        dispatcher,
        "EXPLAIN SELECT id FROM public.customers WHERE phone = '13900001234'",
    )
    .await?;
    show(
        "Customer service tries a pattern on the encrypted phone column: refused",
        support,
        "SELECT id FROM public.customers WHERE phone LIKE '139%'",
    )
    .await?;
    show(
        "Latest waybills with consignee and driver, as the dispatcher",
        dispatcher,
        "SELECT w.waybill_no, w.consignee_name, w.consignee_phone, w.driver_phone, s.destination_city \
         FROM public.waybills w JOIN public.shipments s ON s.id = w.shipment_id \
         ORDER BY w.created_at DESC LIMIT 5",
    )
    .await?;
    // The extended protocol, with a parameter, through the same session.
    let stmt = dispatcher
        .prepare("SELECT count(*) FROM public.waybills WHERE waybill_no LIKE $1")
        .await?;
    let international: i64 = dispatcher.query_one(&stmt, &[&"E%"]).await?.get(0);
    let domestic: i64 = dispatcher.query_one(&stmt, &[&"SF%"]).await?.get(0);
    outln!(
        "== Prepared statement, reused: {domestic} domestic SF waybills, {international} international UPU S10 waybills\n"
    );
    Ok(())
}

async fn show_metrics(proxy: &RunningProxy) {
    let text = String::from_utf8_lossy(&proxy.metrics.render()).to_string();
    outln!(
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
                || l.starts_with("pgveil_sensitive_values_total")
                || l.starts_with("pgveil_denied_queries_total")
                || l.starts_with("pgveil_policy_info"))
    }) {
        outln!("   {line}");
    }
}
