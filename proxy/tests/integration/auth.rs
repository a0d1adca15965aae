//! Authentication relay: every method, the client's own user and password.
use pgveil_testkit::{AuthMethod, ClusterOptions};

use crate::support::*;

async fn login_works(method: AuthMethod) {
    let pg = pg(ClusterOptions {
        auth: method,
        ..Default::default()
    });
    let proxy = proxy_for(&pg).await;
    let c = client(&proxy).await;
    let who: String = c
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, USER);

    let wrong = tokio_postgres::connect(
        &conninfo(&proxy, USER, "wrong password"),
        tokio_postgres::NoTls,
    )
    .await;
    if method == AuthMethod::Trust {
        assert!(wrong.is_ok());
    } else {
        let err = wrong.err().expect("a wrong password must be refused");
        assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{err}");
    }
    // A refused login does not disturb working sessions.
    assert_eq!(c.simple_query("select 1").await.unwrap().len(), 3);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust() {
    login_works(AuthMethod::Trust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_password() {
    login_works(AuthMethod::Password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5() {
    login_works(AuthMethod::Md5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256() {
    login_works(AuthMethod::ScramSha256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_gets_the_servers_error() {
    let pg = pg(ClusterOptions {
        auth: AuthMethod::ScramSha256,
        ..Default::default()
    });
    let proxy = proxy_for(&pg).await;
    let err = tokio_postgres::connect(&conninfo(&proxy, "nobody_here", "x"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("unknown user refused");
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{err}");
    proxy.shutdown().await;
}

/// A client asking for protocol 3.2 with an unknown `_pq_` option gets the
/// server's NegotiateProtocolVersion relayed (PostgreSQL 15 speaks 3.0), then
/// logs in and queries as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_protocol_version_is_relayed() {
    let pg = pg_trust();
    let proxy = proxy_for(&pg).await;
    let mut raw = Raw::connect(&proxy).await;
    let mut body = Vec::new();
    body.extend_from_slice(&((3u32 << 16) | 2).to_be_bytes());
    for (k, v) in [
        ("user", USER),
        ("database", "postgres"),
        ("_pq_.pgveil_test", "on"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    raw.send(&startup).await;

    let login = raw.until_ready().await;
    let negotiate = login
        .iter()
        .find(|m| m.tag == b'v')
        .unwrap_or_else(|| panic!("no NegotiateProtocolVersion in {}", tags(&login)));
    // The newest version the server supports (PostgreSQL sends the whole
    // code, 3.0), then the options it did not recognise.
    assert_eq!(negotiate.body[..4], (3u32 << 16).to_be_bytes());
    assert_eq!(negotiate.body[4..8], 1u32.to_be_bytes());
    assert_eq!(&negotiate.body[8..], b"_pq_.pgveil_test\0");
    assert!(login.iter().any(|m| m.tag == b'K'), "{}", tags(&login));

    raw.send(&fe::query("select 40 + 2")).await;
    let answer = raw.until_ready().await;
    assert_eq!(tags(&answer), "TDCZ");
    assert_eq!(answer[1].body[6..], *b"42");
    proxy.shutdown().await;
}

/// The catalog login needs a password the configuration lacks: statements on protected data
/// are refused with a reason that names the setting, and the server's reason for a wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_login_without_its_password_is_named() {
    use crate::support::write_fixture::{policy_files, POLICY};
    let pg = pg(ClusterOptions {
        auth: AuthMethod::ScramSha256,
        users: vec![
            (USER.into(), PASSWORD.into()),
            ("catalog_login".into(), "s3cret".into()),
        ],
        ..Default::default()
    });
    direct(&pg)
        .await
        .batch_execute(
            "create table customers (id int primary key, name text, phone text, id_card text,
                                     address text, points text);",
        )
        .await
        .unwrap();
    let files = policy_files(POLICY);
    for (password, says) in [
        (None, "set catalog.password or PGVEIL_CATALOG_PASSWORD"),
        (
            Some("wrong".to_string()),
            "password authentication failed for user \"catalog_login\" (28P01)",
        ),
    ] {
        let mut config = config_for(&pg);
        let mut e = pgveil::config::EnforcementConfig::new(
            files.policy.clone(),
            files.keyring.clone(),
            "catalog_login",
        );
        e.catalog_password = password;
        config.enforcement = Some(e);
        let proxy = proxy_with(config).await;
        let c = client(&proxy).await;
        let err = c
            .query("select phone from customers", &[])
            .await
            .expect_err("the catalog cannot be read");
        let db = err.as_db_error().expect("an ErrorResponse");
        assert_eq!(db.code().code(), "57P03", "{db:?}");
        assert!(db.message().contains(says), "{}", db.message());
        proxy.shutdown().await;
    }
}
