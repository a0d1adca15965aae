//! The policy follows the current role, as PostgreSQL's privileges do: `SET ROLE`, `SET LOCAL
//! ROLE`, `set_config('role', ...)`, `RESET ROLE`, `SET SESSION AUTHORIZATION`, `DISCARD ALL`,
//! the end of a transaction and a rollback each change whose view a statement gets. The
//! pattern is PostgREST's: one NOINHERIT login (the authenticator) that switches, per request,
//! to the role of the user it serves, on pooled connections, with prepared statements reused
//! across roles. The authenticator is a member of every role it may switch to, so its own view
//! is the least restrictive of theirs (the dispatcher's); each request sees its role's.
use crate::support::read_fixture::{mask, refused, rows, setup, Setup, ROWS};
use crate::support::*;

/// `name` (level important) as each policy role sees it: dispatcher in clear, everyone else
/// masked.
fn name_as(s: &Setup, clear: bool) -> String {
    if clear {
        ROWS[0].1.to_string()
    } else {
        mask("cn_name", ROWS[0].1, &s.keys)
    }
}

async fn authenticator(s: &Setup) -> tokio_postgres::Client {
    let db = direct(&s.cluster).await;
    db.batch_execute(
        "create role web_auth login noinherit;
         grant dispatch_app, support_team, bi_reader to web_auth;
         create role web_inherit login in role dispatch_app;
         create role web_default login noinherit in role dispatch_app, support_team;
         alter role web_default set role = 'support_team';",
    )
    .await
    .unwrap();
    client_as(&s.proxy, "web_auth", "").await
}

async fn one_name(c: &tokio_postgres::Client) -> String {
    rows(c, "select name from customers where id = 1").await[0][0].clone()
}

#[tokio::test]
async fn the_policy_follows_the_current_role() {
    let s = setup().await;
    let web = authenticator(&s).await;
    // The authenticator's own view: the least restrictive of its member roles' (the
    // dispatcher's: names in clear, ID cards masked).
    assert_eq!(one_name(&web).await, name_as(&s, true));
    assert_eq!(
        rows(&web, "select id_card from customers where id = 1").await[0][0],
        mask("cn_id_card", ROWS[0].3, &s.keys)
    );

    // SET ROLE to a more restricted role, then RESET ROLE.
    rows(&web, "set role support_team").await;
    assert_eq!(one_name(&web).await, name_as(&s, false));
    assert_eq!(
        refused(&web, "select id_card from customers").await,
        "42501"
    );
    rows(&web, "reset role").await;
    assert_eq!(one_name(&web).await, name_as(&s, true));

    // A request: BEGIN; set_config('role', $1, true) (a parameter, as PostgREST sends it);
    // the query; COMMIT ends the local role.
    web.batch_execute("begin").await.unwrap();
    web.query("select set_config('role', $1, true)", &[&"support_team"])
        .await
        .unwrap();
    let masked: String = web
        .query_one("select name from customers where id = $1", &[&1i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(masked, name_as(&s, false));
    web.batch_execute("commit").await.unwrap();
    assert_eq!(one_name(&web).await, name_as(&s, true));

    // SET LOCAL ROLE undone by ROLLBACK, and SET ROLE undone by ROLLBACK TO SAVEPOINT.
    rows(&web, "begin").await;
    rows(&web, "set local role support_team").await;
    assert_eq!(one_name(&web).await, name_as(&s, false));
    rows(&web, "rollback").await;
    assert_eq!(one_name(&web).await, name_as(&s, true));
    rows(&web, "begin").await;
    rows(&web, "savepoint a").await;
    rows(&web, "set role support_team").await;
    assert_eq!(one_name(&web).await, name_as(&s, false));
    rows(&web, "rollback to savepoint a").await;
    assert_eq!(one_name(&web).await, name_as(&s, true));
    rows(&web, "commit").await;

    // In a failed transaction the server cannot say who is asking; the statement gets the
    // error the server gives every statement there, and ROLLBACK undoes the switch.
    rows(&web, "begin").await;
    rows(&web, "set local role support_team").await;
    assert_eq!(refused(&web, "select 1/0").await, "22012");
    assert_eq!(
        refused(&web, "select name from customers where id = 1").await,
        "25P02"
    );
    rows(&web, "rollback").await;
    assert_eq!(one_name(&web).await, name_as(&s, true));

    // A prepared statement, judged once, is judged again at Bind when the role has changed.
    let st = web
        .prepare("select name, phone from customers where id = $1")
        .await
        .unwrap();
    for (role, clear) in [
        ("support_team", false),
        ("dispatch_app", true),
        ("bi_reader", false),
        ("dispatch_app", true),
    ] {
        rows(&web, &format!("set role {role}")).await;
        let r = web.query_one(&st, &[&1i32]).await.unwrap();
        let name: String = r.get(0);
        let phone: String = r.get(1);
        assert_eq!(name, name_as(&s, clear), "as {role}");
        let phone_seen = match role {
            "dispatch_app" => ROWS[0].2.to_string(),
            "bi_reader" => mask("hash", ROWS[0].2, &s.keys),
            _ => mask("cn_mobile", ROWS[0].2, &s.keys),
        };
        assert_eq!(phone, phone_seen, "as {role}");
    }
    // set_config('role', ..., false) lasts for the session; DISCARD ALL resets it.
    rows(&web, "reset role").await;
    rows(&web, "select set_config('role', 'support_team', false)").await;
    assert_eq!(one_name(&web).await, name_as(&s, false));
    rows(&web, "discard all").await;
    assert_eq!(one_name(&web).await, name_as(&s, true));

    // Code the server runs may switch roles: a prepared statement; and a change of session
    // authorization, however it is spelled, resets the role.
    rows(
        &web,
        "prepare become as select set_config('role', 'support_team', false)",
    )
    .await;
    rows(&web, "execute become").await;
    assert_eq!(one_name(&web).await, name_as(&s, false));
    assert_eq!(
        refused(&web, "execute become; select name from customers").await,
        "0A000"
    );
    rows(&web, "set session_authorization to default").await;
    assert_eq!(one_name(&web).await, name_as(&s, true));
    rows(&web, "deallocate become").await;

    // Writes follow the role too: the dispatcher writes a phone, stored as ciphertext.
    rows(&web, "set role dispatch_app").await;
    rows(
        &web,
        "insert into customers (id, name, phone) values (50, 'x', '13700000050')",
    )
    .await;
    assert_eq!(
        rows(
            &web,
            "select phone from customers where phone = '13700000050'"
        )
        .await[0][0],
        "13700000050"
    );
    crate::support::read_fixture::assert_stored_as_ciphertext(&s.cluster, &["phone"]).await;
}

#[tokio::test]
async fn logins_get_the_view_of_the_role_they_are() {
    let s = setup().await;
    let _ = authenticator(&s).await;
    // A member of dispatch_app has its view without SET ROLE.
    let inherit = client_as(&s.proxy, "web_inherit", "").await;
    assert_eq!(one_name(&inherit).await, name_as(&s, true));
    // A role default (ALTER ROLE ... SET role) applies from the first statement.
    let defaulted = client_as(&s.proxy, "web_default", "").await;
    assert_eq!(
        rows(&defaulted, "select current_user").await[0][0],
        "support_team"
    );
    assert_eq!(one_name(&defaulted).await, name_as(&s, false));
    // RESET ROLE goes back to that default; SET ROLE NONE to the login itself (a member of
    // dispatch_app: the dispatcher's view).
    rows(&defaulted, "reset role").await;
    assert_eq!(one_name(&defaulted).await, name_as(&s, false));
    rows(&defaulted, "set role none").await;
    assert_eq!(one_name(&defaulted).await, name_as(&s, true));
    // SET SESSION AUTHORIZATION (a superuser's) changes the role too.
    let admin = client_as(&s.proxy, "postgres", "").await;
    rows(&admin, "set session authorization dispatch_app").await;
    assert_eq!(one_name(&admin).await, name_as(&s, true));
    rows(&admin, "set session authorization support_ann").await;
    assert_eq!(one_name(&admin).await, name_as(&s, false));
    assert_eq!(
        refused(&admin, "select id_card from customers").await,
        "42501"
    );
    // A login that is not a member cannot switch: the server refuses, and the view stays.
    let ann = client_as(&s.proxy, "support_ann", "").await;
    assert_eq!(refused(&ann, "set role dispatch_app").await, "42501");
    assert_eq!(
        refused(&ann, "select set_config('role', 'dispatch_app', false)").await,
        "42501"
    );
    assert_eq!(one_name(&ann).await, name_as(&s, false));
}

#[tokio::test]
async fn a_role_switch_is_never_judged_with_the_old_role() {
    let s = setup().await;
    let web = authenticator(&s).await;
    // In one Query text, nothing after a role switch that reaches protected data: pgveil
    // would judge it before the switch has happened.
    for sql in [
        "set role support_team; select name from customers",
        "select set_config('role', 'support_team', false); select phone from customers",
        "reset role; select name from customers",
        "set session authorization support_team; select name from customers",
        "set session_authorization = 'web_auth'; select name from customers",
        r#"select U&"set\005fconfig"('role', 'support_team', false); select name from customers"#,
        r#"select U&"set\005fconfig"('role', 'support_team', false)"#,
    ] {
        assert_eq!(refused(&web, sql).await, "0A000", "{sql}");
    }
    // Near neighbour: a switch followed by what reaches nothing protected.
    assert_eq!(
        rows(&web, "set role support_team; select current_user").await[0][0],
        "support_team"
    );
    rows(&web, "reset role").await;

    // In one extended-protocol batch (no Sync between), the statement after the switch
    // cannot wait for it: refused, and the switch itself still runs.
    let mut raw = Raw::login(&s.proxy, "web_auth").await;
    raw.send(&switch_then(
        "select name from customers where id = 1",
        false,
    ))
    .await;
    let msgs = raw.until_ready().await;
    let err = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("no refusal: {}", tags(&msgs)));
    assert_eq!(
        err.sqlstate().as_deref(),
        Some("22023"),
        "{:?}",
        err.field(b'M')
    );
    assert!(
        !msgs.iter().any(|m| m.tag == b'D'),
        "rows came back: {}",
        tags(&msgs)
    );
    // Near neighbour: in the same batch, what is judged the same for every role runs.
    let mut near = Raw::login(&s.proxy, "web_auth").await;
    near.send(&switch_then("select id from customers where id = 1", false))
        .await;
    let msgs = near.until_ready().await;
    assert_eq!(row_value(&msgs), "1", "{}", tags(&msgs));
    assert!(!msgs.iter().any(|m| m.tag == b'E'), "{}", tags(&msgs));
    // The error rolled the batch's implicit transaction back, the switch with it: after the
    // Sync pgveil asks the server, and the view is the login's own again.
    assert_eq!(
        raw_first_value(&mut raw, "select current_user").await,
        "web_auth"
    );
    assert_eq!(
        raw_first_value(&mut raw, "select name from customers where id = 1").await,
        name_as(&s, true)
    );
    // The same batch with a Sync after the switch: the next statement waits for it.
    raw.send(&switch_then(
        "select name from customers where id = 1",
        true,
    ))
    .await;
    raw.until_ready().await;
    let msgs = raw.until_ready().await;
    assert_eq!(row_value(&msgs), name_as(&s, false), "{}", tags(&msgs));
    raw.send(&fe::query("reset role")).await;
    raw.until_ready().await;

    // A prepared statement bound in the batch right after a switch: refused too.
    let mut raw = Raw::login(&s.proxy, "web_auth").await;
    raw.send(&fe::parse(
        "names",
        "select name from customers where id = $1",
    ))
    .await;
    raw.send(&fe::sync()).await;
    raw.until_ready().await;
    let mut batch = Vec::new();
    batch.extend(fe::parse("", "set role support_team"));
    batch.extend(fe::bind("", "", &[], false));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::bind("", "names", &[Some("1")], false));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    assert!(
        !msgs.iter().any(|m| m.tag == b'D'),
        "rows came back: {}",
        tags(&msgs)
    );
    assert!(msgs
        .iter()
        .any(|m| m.sqlstate().as_deref() == Some("22023")));
    // Next cycles: the same statement, bound again, gets the view of the role in force.
    for (switch, clear) in [("select 1", true), ("set role support_team", false)] {
        raw.send(&fe::query(switch)).await;
        raw.until_ready().await;
        let mut batch = Vec::new();
        batch.extend(fe::bind("", "names", &[Some("1")], false));
        batch.extend(fe::execute("", 0));
        batch.extend(fe::sync());
        raw.send(&batch).await;
        let msgs = raw.until_ready().await;
        assert_eq!(row_value(&msgs), name_as(&s, clear), "after {switch}");
    }
}

/// `SET ROLE support_team`, then `sql`, in one extended-protocol batch; `synced`: with a Sync
/// between them.
fn switch_then(sql: &str, synced: bool) -> Vec<u8> {
    let mut batch = Vec::new();
    batch.extend(fe::parse("", "set role support_team"));
    batch.extend(fe::bind("", "", &[], false));
    batch.extend(fe::execute("", 0));
    if synced {
        batch.extend(fe::sync());
    }
    batch.extend(fe::parse("", sql));
    batch.extend(fe::bind("", "", &[], false));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::sync());
    batch
}

/// The first value of the first DataRow of a message list.
fn row_value(msgs: &[Msg]) -> String {
    let row = msgs
        .iter()
        .find(|m| m.tag == b'D')
        .unwrap_or_else(|| panic!("no row: {}", tags(msgs)));
    let len = i32::from_be_bytes([row.body[2], row.body[3], row.body[4], row.body[5]]) as usize;
    String::from_utf8_lossy(&row.body[6..6 + len]).to_string()
}

async fn raw_first_value(raw: &mut Raw, sql: &str) -> String {
    raw.send(&fe::query(sql)).await;
    row_value(&raw.until_ready().await)
}
