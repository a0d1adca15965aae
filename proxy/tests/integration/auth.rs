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
