//! The cases of the split battery (see `tests/split_battery.rs`).
//!
//! A case is a setup (run directly on the primary before each run) and a list of steps. In both,
//! `{c}` stands for a tag unique to the run, so every run has its own tables, sequences and
//! functions. Every setup starts with [`BASE`]: a table `{c}_t (a int primary key, b text)` with
//! the rows (1,'x') and (2,'y'), and a sequence `{c}_s`.
//!
//! Steps are SQL strings, or:
//! * `@wait` — wait until the replica replayed everything the primary wrote so far;
//! * `@notes` — the notifications the connection received so far;
//! * `@norows SQL` — compare only success/error (for output with timings);
//! * `@copyout SQL` / `@copyin SQL|DATA` — COPY TO STDOUT / FROM STDIN (through tokio-postgres'
//!   COPY API, i.e. the extended protocol, in both protocol runs).
//!
//! Statements are written so that their results do not depend on the run (no tags, timings,
//! XIDs or PIDs in the output).

/// Objects every case may use, created once before pgcast starts (so pgcast's function catalog
/// knows them). Every function here writes (inserts into `wlog`) and returns a constant.
pub const GLOBAL_SETUP: &str = r#"
CREATE TABLE wlog (id bigserial PRIMARY KEY, tag text);
CREATE TABLE bt (id int PRIMARY KEY, v text);
INSERT INTO bt VALUES (1, 'one');
CREATE FUNCTION bw(bt) RETURNS text VOLATILE LANGUAGE sql
  AS $$ INSERT INTO wlog (tag) VALUES ('bw') RETURNING 'w' $$;
CREATE FUNCTION bw_text(text) RETURNS text VOLATILE LANGUAGE sql
  AS $$ INSERT INTO wlog (tag) VALUES ($1) RETURNING 'w' $$;
CREATE FUNCTION rd(bt) RETURNS text IMMUTABLE LANGUAGE sql AS $$ SELECT 'r' $$;
CREATE FUNCTION "RD"(bt) RETURNS text VOLATILE LANGUAGE sql
  AS $$ INSERT INTO wlog (tag) VALUES ('RD') RETURNING 'W' $$;
CREATE FUNCTION "wrïte"() RETURNS text VOLATILE LANGUAGE sql
  AS $$ INSERT INTO wlog (tag) VALUES ('wrïte') RETURNING 'w' $$;
CREATE PROCEDURE bp() LANGUAGE sql AS $$ INSERT INTO wlog (tag) VALUES ('bp') $$;
CREATE PROCEDURE bp_inout(INOUT x int) LANGUAGE plpgsql
  AS $$ BEGIN INSERT INTO wlog (tag) VALUES ('bp_inout'); x := x + 1; END $$;
CREATE SEQUENCE gseq;
CREATE SCHEMA ws;
GRANT USAGE ON SCHEMA ws TO app_md5;
DO $do$
DECLARE
  n text;
BEGIN
  -- Writing shadows taking the row type bt: reachable as f(t) and as t.f / (t).f.
  FOREACH n IN ARRAY ARRAY['ceil','floor','substring','overlay','position','trim','extract',
      'normalize','coalesce','greatest','nullif','lower','abs','left','btrim','random',
      'timeofday','pg_is_in_recovery','clock_timestamp','now'] LOOP
    EXECUTE format('CREATE FUNCTION public.%I(bt) RETURNS text VOLATILE LANGUAGE sql AS %L',
      n, format('INSERT INTO wlog (tag) VALUES (%L) RETURNING %L', n, n));
  END LOOP;
  -- Writing shadows taking text: an unknown literal prefers them over numeric ones.
  FOREACH n IN ARRAY ARRAY['ceil','floor','substring','overlay','position','trim','extract',
      'pg_sleep'] LOOP
    EXECUTE format('CREATE FUNCTION public.%I(text) RETURNS text VOLATILE LANGUAGE sql AS %L',
      n, format('INSERT INTO wlog (tag) VALUES (%L) RETURNING %L', n, n));
  END LOOP;
  -- Writing overloads of names in the default read list.
  FOREACH n IN ARRAY ARRAY['random','clock_timestamp','timeofday','gen_random_uuid',
      'pg_is_in_recovery','pg_last_wal_replay_lsn','pg_sleep'] LOOP
    EXECUTE format('CREATE FUNCTION public.%I(int) RETURNS text VOLATILE LANGUAGE sql AS %L',
      n, format('INSERT INTO wlog (tag) VALUES (%L) RETURNING %L', n, n));
  END LOOP;
  -- Writing functions in another schema named like read-list / catalog functions.
  FOREACH n IN ARRAY ARRAY['random','pg_is_in_recovery','now','lower','version'] LOOP
    EXECUTE format('CREATE FUNCTION ws.%I() RETURNS text VOLATILE LANGUAGE sql AS %L',
      n, format('INSERT INTO wlog (tag) VALUES (%L) RETURNING %L', n, n));
  END LOOP;
END
$do$;
"#;

/// Prepended to every case's setup.
pub const BASE: &str = "CREATE TABLE {c}_t (a int PRIMARY KEY, b text);
INSERT INTO {c}_t VALUES (1, 'x'), (2, 'y');
CREATE SEQUENCE {c}_s;
";

pub enum Step {
    Sql(String, bool),
    CopyOut(String),
    CopyIn(String, &'static str),
    Wait,
    Notifications,
}

impl Step {
    fn parse(s: &'static str) -> Step {
        if s == "@wait" {
            Step::Wait
        } else if s == "@notes" {
            Step::Notifications
        } else if let Some(q) = s.strip_prefix("@norows ") {
            Step::Sql(q.to_string(), false)
        } else if let Some(q) = s.strip_prefix("@copyout ") {
            Step::CopyOut(q.to_string())
        } else if let Some(q) = s.strip_prefix("@copyin ") {
            let (q, data) = q.split_once('|').expect("@copyin SQL|DATA");
            Step::CopyIn(q.to_string(), data)
        } else {
            Step::Sql(s.to_string(), true)
        }
    }

    /// For the mismatch table.
    pub fn short(&self) -> String {
        let s = match self {
            Step::Sql(q, _) => q.clone(),
            Step::CopyOut(q) | Step::CopyIn(q, _) => q.clone(),
            Step::Wait => "@wait".into(),
            Step::Notifications => "@notes".into(),
        };
        let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.chars().count() > 70 {
            format!("{}…", s.chars().take(69).collect::<String>())
        } else {
            s
        }
    }
}

pub struct Case {
    pub id: usize,
    pub class: &'static str,
    pub name: String,
    pub setup: String,
    pub steps: Vec<Step>,
}

struct Builder {
    cases: Vec<Case>,
}

impl Builder {
    fn add(&mut self, class: &'static str, name: &str, setup: &str, steps: &[&'static str]) {
        self.add_steps(
            class,
            name,
            setup,
            steps.iter().map(|s| Step::parse(s)).collect(),
        );
    }

    fn add_steps(&mut self, class: &'static str, name: &str, setup: &str, steps: Vec<Step>) {
        let id = self.cases.len();
        self.cases.push(Case {
            id,
            class,
            name: format!("{class}/{name}"),
            setup: format!("{BASE}{setup}"),
            steps,
        });
    }

    /// One case per SQL text, each a single statement (then `then`, if any).
    fn each(&mut self, class: &'static str, prefix: &str, sqls: &[&str], then: &[&'static str]) {
        for (i, sql) in sqls.iter().enumerate() {
            let mut steps = vec![Step::Sql(sql.to_string(), true)];
            steps.extend(then.iter().map(|s| Step::parse(s)));
            self.add_steps(class, &format!("{prefix}{}", i + 1), "", steps);
        }
    }
}

pub fn all() -> Vec<Case> {
    let mut b = Builder { cases: Vec::new() };

    // ---- functions called in ways a parser may miss --------------------------------------------
    let c = "attr-notation";
    b.each(
        c,
        "",
        &[
            "SELECT t.bw FROM bt t",
            "SELECT (t).bw FROM bt t",
            "SELECT bt.bw FROM bt",
            "SELECT (bt.*).bw FROM bt",
            "SELECT T.BW FROM BT T",
            "SELECT t . bw FROM bt AS t",
            "SELECT t./* c */bw FROM bt t",
            "SELECT t.\"bw\" FROM bt t",
            "SELECT (ROW(1, 'x')::bt).bw",
            "SELECT id FROM bt t WHERE t.bw = 'w'",
            "SELECT id FROM bt t ORDER BY (t).bw",
            "SELECT (SELECT s.bw FROM bt s)",
            "SELECT x.bw FROM (SELECT * FROM bt) x",
            "SELECT t.ceil FROM bt t",
            "SELECT t.substring FROM bt t",
            "SELECT (t).overlay FROM bt t",
            "SELECT t.\"position\" FROM bt t",
            "SELECT t.trim FROM bt t",
            "SELECT t.extract FROM bt t",
            "SELECT t.random FROM bt t",
            "SELECT t.pg_is_in_recovery FROM bt t",
            "SELECT t.timeofday FROM bt t",
            "SELECT t.now FROM bt t",
            "SELECT t.\"RD\" FROM bt t",
            "SELECT t.rd FROM bt t",
            "SELECT t.U&\"\\0062w\" FROM bt t",
        ],
        &[],
    );

    let c = "keyword-shadow";
    b.each(
        c,
        "",
        &[
            "SELECT ceil(t) FROM bt t",
            "SELECT floor(t) FROM bt t",
            "SELECT substring(t) FROM bt t",
            "SELECT SUBSTRING(t) FROM bt t",
            "SELECT overlay(t) FROM bt t",
            "SELECT \"position\"(t) FROM bt t",
            "SELECT \"trim\"(t) FROM bt t",
            "SELECT trim(t) FROM bt t",
            "SELECT \"extract\"(t) FROM bt t",
            "SELECT \"normalize\"(t) FROM bt t",
            "SELECT \"coalesce\"(t) FROM bt t",
            "SELECT \"greatest\"(t) FROM bt t",
            "SELECT \"nullif\"(t) FROM bt t",
            "SELECT lower(t) FROM bt t",
            "SELECT abs(t) FROM bt t",
            "SELECT \"left\"(t) FROM bt t",
            "SELECT btrim(t) FROM bt t",
            "SELECT ceil('1.5')",
            "SELECT CEIL('1.5')",
            "SELECT floor('2.5'::text)",
            "SELECT substring('abc')",
            "SELECT overlay('abc')",
            "SELECT \"position\"('abc')",
            "SELECT \"trim\"('abc')",
            "SELECT \"extract\"('abc')",
            "SELECT public.ceil('1.5')",
            "SELECT \"public\".\"floor\"('1')",
            "SELECT PUBLIC.SUBSTRING('abc')",
            "SELECT ceil /* c */ ('1.5')",
            "SELECT ceil\n(\n'1.5'\n)",
            "SELECT pg_sleep('0')",
            "SELECT ceil(1.5), floor(2.5)",
            "SELECT substring('abc' FROM 2)",
        ],
        &[],
    );

    let c = "uescape-ident";
    b.each(
        c,
        "",
        &[
            "SELECT U&\"\\0062w\"(t) FROM bt t",
            "SELECT U&\"!0062w\" UESCAPE '!' (t) FROM bt t",
            "SELECT u&\"\\0062\\0077\"(t) FROM bt t",
            "SELECT U&\"wr\\00efte\"()",
            "SELECT \"wrïte\"()",
            "SELECT U&\"\\0072andom\"(1)",
            "SELECT U&\"\\0062w_text\"('a')",
            "SELECT public.U&\"\\0062w_text\"('a')",
            "SELECT \"RD\"(t) FROM bt t",
            "SELECT rd(t) FROM bt t",
            "SELECT \"Rd\"(t) FROM bt t",
        ],
        &[],
    );

    let c = "known-writer";
    b.each(
        c,
        "",
        &[
            "SELECT bw_text('a')",
            "select bw_text('a')",
            "SELECT BW_TEXT('a')",
            "SELECT \"bw_text\"('a')",
            "SELECT public.bw_text('a')",
            "SELECT/**/bw_text('a')",
            "  SELECT\tbw_text ( 'a' ) ;",
            "-- lead\nSELECT bw_text('a')",
            "SELECT bw_text(E'a')",
            "SELECT bw_text($$a$$)",
            "SELECT * FROM bw_text('a')",
            "SELECT 1 WHERE bw_text('a') = 'w'",
            "SELECT (SELECT bw_text('a'))",
            "SELECT CASE WHEN true THEN bw_text('a') END",
            "SELECT x FROM (VALUES (bw_text('a'))) v(x)",
            "SELECT count(*) FILTER (WHERE bw_text('a') = 'w') FROM bt",
            "SELECT id FROM bt ORDER BY bw_text(v)",
            "SELECT ARRAY[bw_text('a')]",
            "SELECT 'a' || bw_text('a')",
            "VALUES (bw_text('a'))",
            "SELECT x FROM bt, LATERAL bw_text(v) x",
            "WITH q AS (SELECT bw_text('a') AS x) SELECT x FROM q",
            "SELECT bw(t) FROM bt t",
            "SELECT bw_text('a') FROM bt LIMIT 0",
            "@norows EXPLAIN SELECT bw_text('a')",
            "SELECT 1 UNION ALL SELECT 2 WHERE bw_text('a') = 'w'",
            "(SELECT bw_text('a'))",
        ],
        &[],
    );

    // ---- functions unknown to pgcast's catalog -------------------------------------------------
    let c = "fresh-function";
    let fresh = "CREATE FUNCTION {c}_f() RETURNS text VOLATILE LANGUAGE sql
  AS $$ INSERT INTO {c}_t VALUES (10, 'f') RETURNING 'f' $$;
CREATE FUNCTION {c}_g({c}_t) RETURNS text VOLATILE LANGUAGE sql
  AS $$ INSERT INTO {c}_t VALUES (20 + $1.a, 'g') RETURNING 'g' $$;
CREATE DOMAIN {c}_d AS int;
CREATE FUNCTION random({c}_d) RETURNS text VOLATILE LANGUAGE sql
  AS $$ INSERT INTO {c}_t VALUES (30, 'r') RETURNING 'r' $$;
CREATE FUNCTION lower({c}_t) RETURNS text VOLATILE LANGUAGE sql
  AS $$ INSERT INTO {c}_t VALUES (40 + $1.a, 'l') RETURNING 'l' $$;
CREATE FUNCTION {c}_p() RETURNS text VOLATILE LANGUAGE plpgsql
  AS $$ BEGIN PERFORM nextval('{c}_s'); RETURN 'p'; END $$;
";
    for (i, q) in [
        "SELECT {c}_f()",
        "SELECT * FROM {c}_f()",
        "SELECT x FROM {c}_t, LATERAL {c}_f() x WHERE a = 1",
        "SELECT public.{c}_f()",
        "SELECT upper({c}_f())",
        "SELECT t.{c}_g FROM {c}_t t WHERE a = 1",
        "SELECT {c}_g(t) FROM {c}_t t WHERE a = 1",
        "SELECT random(1::{c}_d)",
        "SELECT lower(t) FROM {c}_t t WHERE a = 2",
        "SELECT t.lower FROM {c}_t t WHERE a = 2",
        "SELECT {c}_p()",
        "SELECT 1 FROM {c}_t WHERE {c}_f() IS NOT NULL AND a = 1",
    ]
    .into_iter()
    .enumerate()
    {
        b.add(
            c,
            &format!("{}", i + 1),
            fresh,
            &[q, "@wait", "SELECT a, b FROM {c}_t ORDER BY a"],
        );
    }
    b.add(
        c,
        "create-or-replace-through-pgcast",
        "",
        &[
            "CREATE OR REPLACE FUNCTION {c}_h() RETURNS text VOLATILE LANGUAGE sql AS $$ INSERT INTO {c}_t VALUES (7, 'h') RETURNING 'h' $$",
            "SELECT {c}_h()",
            "@wait",
            "SELECT a, b FROM {c}_t ORDER BY a",
        ],
    );
    b.add(
        c,
        "replace-immutable-by-writer",
        "CREATE FUNCTION {c}_h() RETURNS text IMMUTABLE LANGUAGE sql AS $$ SELECT 'r' $$;",
        &[
            "SELECT {c}_h()",
            "CREATE OR REPLACE FUNCTION {c}_h() RETURNS text VOLATILE LANGUAGE sql AS $$ INSERT INTO {c}_t VALUES (8, 'h') RETURNING 'h' $$",
            "SELECT {c}_h()",
            "@wait",
            "SELECT a, b FROM {c}_t ORDER BY a",
        ],
    );
    b.add(
        c,
        "create-then-attr",
        "",
        &[
            "CREATE FUNCTION {c}_k({c}_t) RETURNS text LANGUAGE sql AS $$ INSERT INTO {c}_t VALUES (9, 'k') RETURNING 'k' $$",
            "SELECT t.{c}_k FROM {c}_t t WHERE a = 1",
        ],
    );
    b.add(
        c,
        "create-shadow-random",
        "CREATE DOMAIN {c}_d AS int;",
        &[
            "CREATE FUNCTION random({c}_d) RETURNS text LANGUAGE sql AS $$ INSERT INTO {c}_t VALUES (11, 'r') RETURNING 'r' $$",
            "SELECT random(5::{c}_d)",
        ],
    );
    b.add(
        c,
        "multi-create-and-call",
        "",
        &["CREATE FUNCTION {c}_m() RETURNS text LANGUAGE sql AS $$ INSERT INTO {c}_t VALUES (12, 'm') RETURNING 'm' $$; SELECT {c}_m()"],
    );

    // ---- shadows/overloads of the default read list --------------------------------------------
    let c = "read-list-shadow";
    b.each(
        c,
        "",
        &[
            "SELECT random(1)",
            "SELECT RANDOM(1)",
            "SELECT \"random\"(1)",
            "SELECT public.random(1)",
            "SELECT random (/*x*/ 1)",
            "SELECT random(t) FROM bt t",
            "SELECT clock_timestamp(1)",
            "SELECT timeofday(1)",
            "SELECT gen_random_uuid(1)",
            "SELECT pg_is_in_recovery(1)",
            "SELECT pg_last_wal_replay_lsn(1)",
            "SELECT pg_sleep(0)",
            "SELECT pg_sleep(1::int)",
            "SELECT ws.random()",
            "SELECT WS.RANDOM()",
            "SELECT \"ws\".\"random\"()",
            "SELECT ws.pg_is_in_recovery()",
            "SELECT ws.now()",
            "SELECT ws.lower()",
            "SELECT ws.version()",
            "SELECT random() < 2, random(1)",
            "SELECT * FROM random(1)",
        ],
        &[],
    );

    // ---- transaction ids, sequences, locks, notify, set_config ---------------------------------
    let c = "xid-seq-lock";
    b.each(
        c,
        "xid",
        &[
            "SELECT txid_current() IS NOT NULL",
            "SELECT pg_current_xact_id() IS NOT NULL",
            "SELECT txid_current() = txid_current()",
            "select TXID_CURRENT() > 0",
            "SELECT pg_catalog.pg_current_xact_id() IS NULL",
            "SELECT txid_current_if_assigned() IS NULL",
            "SELECT count(*) FROM bt WHERE txid_current() > 0",
        ],
        &[],
    );
    b.add(
        c,
        "xid-in-tx",
        "",
        &[
            "BEGIN",
            "SELECT txid_current() IS NOT NULL",
            "SELECT 1",
            "COMMIT",
        ],
    );
    b.add(
        c,
        "xid-after-read-in-tx",
        "",
        &[
            "BEGIN",
            "SELECT count(*) FROM {c}_t",
            "SELECT pg_current_xact_id() IS NOT NULL",
            "COMMIT",
        ],
    );
    for (i, steps) in [
        &["SELECT nextval('{c}_s')", "SELECT currval('{c}_s')"][..],
        &["SELECT NEXTVAL('{c}_s'::regclass)", "SELECT lastval()"],
        &["SELECT \"nextval\"('{c}_s')", "SELECT currval('{c}_s')"],
        &[
            "SELECT pg_catalog.nextval('{c}_s')",
            "SELECT currval('{c}_s')",
        ],
        &["SELECT * FROM nextval('{c}_s')", "SELECT currval('{c}_s')"],
        &["VALUES (nextval('{c}_s'))", "SELECT currval('{c}_s')"],
        &[
            "SELECT a FROM {c}_t WHERE a = nextval('{c}_s')",
            "SELECT currval('{c}_s')",
        ],
        &[
            "SELECT setval('{c}_s', 42)",
            "SELECT currval('{c}_s')",
            "@wait",
            "SELECT last_value FROM {c}_s",
        ],
        &[
            "SELECT setval('{c}_s', 42, false)",
            "@wait",
            "SELECT last_value, is_called FROM {c}_s",
        ],
        &["SELECT currval('{c}_s')"],
        &[
            "SELECT nextval('{c}_s'), nextval('{c}_s')",
            "SELECT currval('{c}_s')",
        ],
        &["SELECT nextval('gseq') > 0", "SELECT currval('gseq') > 0"],
        &[
            "SELECT x FROM (SELECT nextval('{c}_s') AS x) s",
            "SELECT lastval()",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        b.add(c, &format!("seq{}", i + 1), "", steps);
    }
    for (i, steps) in [
        &[
            "SELECT pg_advisory_lock(hashtext('{c}'))",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        ][..],
        &[
            "SELECT pg_try_advisory_lock(hashtext('{c}'))",
            "SELECT pg_advisory_unlock(hashtext('{c}'))",
        ],
        &[
            "SELECT pg_advisory_lock(hashtext('{c}'))",
            "SELECT pg_advisory_unlock(hashtext('{c}'))",
            "SELECT pg_advisory_unlock(hashtext('{c}'))",
        ],
        &[
            "select PG_ADVISORY_LOCK_SHARED(hashtext('{c}'))",
            "SELECT pg_advisory_unlock_shared(hashtext('{c}'))",
        ],
        &[
            "BEGIN",
            "SELECT pg_advisory_xact_lock(hashtext('{c}'))",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            "COMMIT",
        ],
        &[
            "SELECT pg_advisory_lock(hashtext('{c}'))",
            "SELECT pg_advisory_unlock_all()",
            "SELECT pg_advisory_unlock(hashtext('{c}'))",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        b.add(c, &format!("advisory{}", i + 1), "", steps);
    }
    for (i, steps) in [
        &["LISTEN {c}", "SELECT pg_notify('{c}', 'p1')", "@notes"][..],
        &["SELECT pg_notify('{c}', 'p2')"],
        &["LISTEN {c}", "SELECT PG_NOTIFY('{c}', 'p3')", "@notes"],
        &[
            "LISTEN {c}",
            "SELECT 1 FROM bt WHERE pg_notify('{c}', 'p4') IS NULL",
            "@notes",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        b.add(c, &format!("pg_notify{}", i + 1), "", steps);
    }
    for (i, steps) in [
        &[
            "SELECT set_config('battery.x', 'v1', false)",
            "SELECT current_setting('battery.x')",
        ][..],
        &[
            "SELECT SET_CONFIG('battery.x', 'v2', false)",
            "SHOW battery.x",
        ],
        &[
            "SELECT pg_catalog.set_config('battery.x', 'v3', false)",
            "SELECT current_setting('battery.x', true)",
        ],
        &[
            "SELECT set_config('search_path', 'ws, pg_catalog, public', false)",
            "SELECT random()",
        ],
        &[
            "SELECT set_config('search_path', 'ws, public', false)",
            "SELECT current_schemas(false)",
        ],
        &[
            "BEGIN",
            "SELECT set_config('battery.x', 'v4', true)",
            "SELECT current_setting('battery.x')",
            "COMMIT",
            "SELECT current_setting('battery.x', true)",
        ],
        &[
            "SELECT set_config('battery.x', 'v5', false), 1",
            "SELECT current_setting('battery.x')",
        ],
        &[
            "SELECT 1 FROM (SELECT set_config('battery.x', 'v6', false)) s",
            "SELECT current_setting('battery.x')",
        ],
        &[
            "SELECT set_config('application_name', 'battery', false)",
            "SHOW application_name",
        ],
        &[
            "SELECT set_config('statement_timeout', '123s', false)",
            "SHOW statement_timeout",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        b.add(c, &format!("set_config{}", i + 1), "", steps);
    }

    // ---- deferred BEGIN and transaction modes --------------------------------------------------
    let c = "deferred-begin";
    let count = "SELECT count(*) FROM {c}_t";
    for (i, steps) in [
        &[
            "BEGIN",
            "SET TRANSACTION READ ONLY; COMMIT; INSERT INTO {c}_t VALUES (3, 'z')",
            "@wait",
            count,
        ][..],
        &[
            "BEGIN",
            "set transaction read only; commit; insert into {c}_t values (3, 'z')",
            "@wait",
            count,
        ],
        &[
            "BEGIN READ ONLY",
            "SET TRANSACTION READ WRITE",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "COMMIT",
            "@wait",
            count,
        ],
        &[
            "begin read only",
            "set transaction read write",
            "insert into {c}_t values (3, 'z')",
            "commit",
            "@wait",
            count,
        ],
        &[
            "START TRANSACTION READ ONLY",
            "SET TRANSACTION READ WRITE",
            "UPDATE {c}_t SET b = 'u'",
            "COMMIT",
        ],
        &[
            "BEGIN READ ONLY",
            "SELECT 1",
            "SET TRANSACTION READ WRITE",
            "ROLLBACK",
        ],
        &[
            "BEGIN",
            "SET TRANSACTION READ ONLY",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "ROLLBACK",
        ],
        &[
            "BEGIN READ ONLY",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "ROLLBACK",
        ],
        &[
            "BEGIN",
            "SELECT count(*) FROM {c}_t",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "SELECT count(*) FROM {c}_t",
            "COMMIT",
        ],
        &[
            "BEGIN",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "ROLLBACK",
            count,
        ],
        &[
            "BEGIN",
            "SELECT 1",
            "ROLLBACK",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "@wait",
            count,
        ],
        &[
            "BEGIN; SELECT 1; COMMIT; INSERT INTO {c}_t VALUES (3, 'z')",
            "@wait",
            count,
        ],
        &[
            "BEGIN READ ONLY; SELECT 1; COMMIT; INSERT INTO {c}_t VALUES (3, 'z')",
            "@wait",
            count,
        ],
        &[
            "BEGIN READ ONLY",
            "SELECT 1",
            "COMMIT AND CHAIN",
            "SHOW transaction_read_only",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "ROLLBACK",
        ],
        &[
            "BEGIN",
            "SAVEPOINT a",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "ROLLBACK TO SAVEPOINT a",
            "SELECT count(*) FROM {c}_t",
            "COMMIT",
        ],
        &[
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "SELECT count(*) FROM {c}_t",
            "COMMIT",
        ],
        &[
            "BEGIN",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SELECT count(*) FROM {c}_t",
            "COMMIT",
        ],
        &[
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            "SELECT count(*) FROM {c}_t",
            "SHOW transaction_isolation",
            "COMMIT",
        ],
        &[
            "/* c */ BEGIN",
            "SET TRANSACTION READ ONLY",
            "SELECT count(*) FROM {c}_t",
            "COMMIT",
            "INSERT INTO {c}_t VALUES (3, 'z')",
        ],
        &[
            "Begin Transaction Read Only",
            "Set Transaction Read Write",
            "Delete From {c}_t Where a = 1",
            "Commit",
            "@wait",
            count,
        ],
        &["BEGIN", "SHOW transaction_read_only", "COMMIT"],
        &["BEGIN READ ONLY", "SELECT pg_is_in_recovery()", "COMMIT"],
        &[
            "BEGIN",
            "SET LOCAL battery.x = 'l'",
            "SELECT current_setting('battery.x')",
            "COMMIT",
        ],
        &[
            "BEGIN",
            "SELECT 1",
            "SELECT 1/0",
            "SELECT 1",
            "ROLLBACK",
            "SELECT 1",
        ],
        &["BEGIN READ ONLY", "SELECT nextval('{c}_s')", "ROLLBACK"],
        &[
            "BEGIN READ WRITE",
            "SELECT count(*) FROM {c}_t",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "COMMIT",
            "@wait",
            count,
        ],
        &["END", "ABORT", "COMMIT"],
        &["BEGIN", "BEGIN", "COMMIT"],
        &[
            "BEGIN READ ONLY",
            "SET TRANSACTION READ WRITE; INSERT INTO {c}_t VALUES (3, 'z')",
            "COMMIT",
            "@wait",
            count,
        ],
        &[
            "SET TRANSACTION READ ONLY",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "@wait",
            count,
        ],
    ]
    .into_iter()
    .enumerate()
    {
        b.add(c, &format!("{}", i + 1), "", steps);
    }

    // ---- session characteristics --------------------------------------------------------------
    let c = "session-characteristics";
    for (i, steps) in [
        &[
            "SET default_transaction_isolation = 'serializable'",
            "SELECT count(*) FROM {c}_t",
            "SHOW transaction_isolation",
        ][..],
        &[
            "set default_transaction_isolation to serializable",
            "SELECT count(*) FROM {c}_t",
        ],
        &[
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SELECT count(*) FROM {c}_t",
            "SHOW transaction_isolation",
        ],
        &[
            "set session characteristics as transaction isolation level serializable",
            "BEGIN",
            "SELECT count(*) FROM {c}_t",
            "COMMIT",
        ],
        &[
            "SELECT set_config('default_transaction_isolation', 'serializable', false)",
            "SELECT count(*) FROM {c}_t",
        ],
        &[
            "SET default_transaction_read_only = on",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "SELECT count(*) FROM {c}_t",
        ],
        &[
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "INSERT INTO {c}_t VALUES (3, 'z')",
            "SHOW transaction_read_only",
        ],
        &[
            "SET default_transaction_read_only = on",
            "SET default_transaction_deferrable = on",
            "SET default_transaction_isolation = 'serializable'",
            "SELECT count(*) FROM {c}_t",
        ],
        &[
            "SET default_transaction_isolation = 'repeatable read'",
            "SELECT count(*) FROM {c}_t",
            "SHOW transaction_isolation",
        ],
        &[
            "SET default_transaction_isolation = 'serializable'",
            "RESET default_transaction_isolation",
            "SELECT count(*) FROM {c}_t",
            "SHOW transaction_isolation",
        ],
        &[
            "SET SESSION default_transaction_isolation = 'serializable'",
            "SELECT count(*) FROM bt",
        ],
        &[
            "SET search_path = ws, pg_catalog, public",
            "SELECT random()",
        ],
        &["set search_path to ws, pg_catalog", "SELECT now()"],
        &[
            "SET search_path TO ws, pg_catalog, public",
            "SELECT lower()",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        b.add(c, &format!("{}", i + 1), "", steps);
    }

    // ---- answer like the primary ---------------------------------------------------------------
    let c = "like-the-primary";
    b.each(
        c,
        "",
        &[
            "SELECT pg_is_in_recovery()",
            "select PG_IS_IN_RECOVERY()",
            "SELECT pg_catalog.pg_is_in_recovery()",
            "SELECT * FROM pg_is_in_recovery()",
            "SHOW transaction_read_only",
            "show TRANSACTION_READ_ONLY",
            "SELECT current_setting('transaction_read_only')",
            "SELECT current_setting('in_hot_standby')",
            "SHOW in_hot_standby",
            "SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            "SELECT pg_last_wal_replay_lsn() IS NULL",
            "SELECT pg_current_wal_lsn() IS NOT NULL",
            "SELECT pg_is_wal_replay_paused()",
            "SELECT count(*) FROM pg_stat_replication",
            "SELECT pg_backend_pid() = pg_backend_pid()",
            "SELECT setting FROM pg_settings WHERE name = 'transaction_read_only'",
            "SELECT count(*) FROM pg_stat_wal_receiver",
        ],
        &[],
    );

    // ---- state created in one statement, needed by a later one --------------------------------
    let c = "session-state";
    for (i, steps) in [
        &["CREATE TEMP TABLE {c}_tt (a int)", "INSERT INTO {c}_tt VALUES (1)", "SELECT * FROM {c}_tt"][..],
        &["CREATE TEMP TABLE {c}_tt (a int)", "SELECT count(*) FROM {c}_tt"],
        &["create temporary table {c}_tt (a int)", "select count(*) from {c}_tt"],
        &["CREATE LOCAL TEMP TABLE {c}_tt AS SELECT 1 AS a", "SELECT * FROM {c}_tt"],
        &["CREATE TEMP TABLE IF NOT EXISTS {c}_tt (a int)", "SELECT count(*) FROM {c}_tt"],
        &["/* c */ CREATE TEMP TABLE {c}_tt (a int)", "SELECT count(*) FROM pg_temp.{c}_tt"],
        &["CREATE TABLE pg_temp.{c}_tt (a int)", "SELECT count(*) FROM {c}_tt"],
        &["CREATE TEMP VIEW {c}_tv AS SELECT 1 AS a", "SELECT * FROM {c}_tv"],
        &["CREATE TEMP SEQUENCE {c}_ts", "SELECT nextval('{c}_ts')"],
        &["SELECT 1 AS a INTO TEMP {c}_tt UNION SELECT 2", "SELECT * FROM {c}_tt ORDER BY a"],
        &["SELECT * INTO TEMPORARY TABLE {c}_tt FROM {c}_t", "SELECT count(*) FROM {c}_tt"],
        &["EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) CREATE TEMP TABLE {c}_tt AS SELECT 1 AS a", "SELECT * FROM {c}_tt"],
        &["@norows EXPLAIN ANALYZE CREATE TEMP TABLE {c}_tt AS SELECT 1 AS a", "SELECT * FROM {c}_tt"],
        &["CREATE FUNCTION pg_temp.{c}_tf() RETURNS int LANGUAGE sql AS 'SELECT 7'", "SELECT pg_temp.{c}_tf()"],
        &["DO $$ BEGIN CREATE TEMP TABLE {c}_tt AS SELECT 1 AS a; END $$", "SELECT * FROM {c}_tt"],
        &["DO $$ BEGIN PERFORM set_config('battery.x', 'do', false); END $$", "SELECT current_setting('battery.x')"],
        &["do $x$ begin execute 'set battery.x = ''do2'''; end $x$", "SHOW battery.x"],
        &["SELECT setseed(0.5)", "SELECT random()"],
        &["select SETSEED(0.25)", "SELECT random(), random()"],
        &["SELECT 1 FROM (SELECT setseed(0.75)) s", "SELECT random()"],
        &["PREPARE {c}_p AS SELECT 1", "EXECUTE {c}_p"],
        &["PREPARE {c}_p(int) AS SELECT $1 + 1", "EXECUTE {c}_p(41)", "DEALLOCATE {c}_p", "EXECUTE {c}_p(1)"],
        &["prepare {c}_p as insert into {c}_t values (5, 'p')", "execute {c}_p", "@wait", "SELECT count(*) FROM {c}_t"],
        &["PREPARE {c}_p AS SELECT count(*) FROM {c}_t", "INSERT INTO {c}_t VALUES (6, 'p')", "EXECUTE {c}_p"],
        &["DECLARE {c}_cur CURSOR WITH HOLD FOR SELECT a FROM {c}_t ORDER BY a", "FETCH ALL FROM {c}_cur", "CLOSE {c}_cur"],
        &["declare {c}_cur scroll cursor with hold for select a from {c}_t order by a", "FETCH 1 FROM {c}_cur", "FETCH PRIOR FROM {c}_cur"],
        &["BEGIN", "DECLARE {c}_cur CURSOR FOR SELECT a FROM {c}_t ORDER BY a", "FETCH 1 FROM {c}_cur", "COMMIT"],
        &["BEGIN", "DECLARE {c}_cur CURSOR WITH HOLD FOR SELECT a FROM {c}_t ORDER BY a", "COMMIT", "FETCH ALL FROM {c}_cur"],
        &["LISTEN {c}", "NOTIFY {c}, 'n1'", "@notes"],
        &["listen \"{c}\"", "notify \"{c}\"", "@notes"],
        &["LISTEN {c}", "UNLISTEN *", "NOTIFY {c}, 'n2'", "@notes"],
        &["CREATE TEMP TABLE {c}_tt (a int)", "DISCARD TEMP", "SELECT count(*) FROM {c}_tt"],
        &["SET search_path = {c}_x, public", "SELECT count(*) FROM {c}_u"],
        &["CREATE TEMP TABLE {c}_t (a int)", "SELECT count(*) FROM {c}_t"],
        &["SET battery.y = 'sv'", "SELECT current_setting('battery.y')"],
        &["SET TIME ZONE 'Asia/Tokyo'", "SHOW TimeZone"],
    ]
    .into_iter()
    .enumerate()
    {
        let setup = if steps[0].starts_with("SET search_path = {c}_x") {
            "CREATE SCHEMA {c}_x; CREATE TABLE {c}_x.{c}_u (a int); INSERT INTO {c}_x.{c}_u VALUES (1), (2), (3);"
        } else {
            ""
        };
        b.add(c, &format!("{}", i + 1), setup, steps);
    }

    // ---- the classics --------------------------------------------------------------------------
    let c = "classic";
    let after = ["@wait", "SELECT a, b FROM {c}_t ORDER BY a"];
    for (i, steps) in [
        &["EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) INSERT INTO {c}_t VALUES (3, 'z')"][..],
        &["@norows EXPLAIN ANALYZE INSERT INTO {c}_t VALUES (3, 'z')"],
        &["@norows explain analyze update {c}_t set b = 'e'"],
        &["@norows EXPLAIN (ANALYZE) DELETE FROM {c}_t WHERE a = 1"],
        &["@norows EXPLAIN (ANALYZE TRUE, VERBOSE) SELECT bw_text('e')"],
        &["WITH x AS (INSERT INTO {c}_t VALUES (3, 'z') RETURNING a) SELECT count(*) FROM x"],
        &["WITH x AS (UPDATE {c}_t SET b = 'u' WHERE a = 1 RETURNING a) SELECT a FROM x"],
        &["WITH x AS (DELETE FROM {c}_t WHERE a = 2 RETURNING a) SELECT a FROM x"],
        &["with a as (select 1), x as (insert into {c}_t values (3, 'z') returning 1) select * from a"],
        &["WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 2), w AS (INSERT INTO {c}_t SELECT n + 10, 'r' FROM r RETURNING a) SELECT count(*) FROM w"],
        &["WITH x AS (SELECT 1) INSERT INTO {c}_t SELECT 3, 'z' FROM x"],
        &["SELECT * FROM (WITH x AS (INSERT INTO {c}_t VALUES (3, 'z') RETURNING a) SELECT a FROM x) s"],
        &["SELECT 1 AS a INTO {c}_n", "@wait", "SELECT * FROM {c}_n"],
        &["SELECT * INTO UNLOGGED {c}_n FROM {c}_t"],
        &["select a into table {c}_n from {c}_t"],
        &["CREATE TABLE {c}_n AS SELECT * FROM {c}_t", "@wait", "SELECT count(*) FROM {c}_n"],
        &["SELECT a FROM {c}_t ORDER BY a FOR UPDATE"],
        &["SELECT a FROM {c}_t ORDER BY a FOR NO KEY UPDATE"],
        &["SELECT a FROM {c}_t ORDER BY a FOR SHARE"],
        &["SELECT a FROM {c}_t ORDER BY a FOR KEY SHARE"],
        &["select a from {c}_t order by a for update skip locked"],
        &["SELECT a FROM {c}_t t ORDER BY a FOR UPDATE OF t NOWAIT"],
        &["SELECT * FROM (SELECT a FROM {c}_t FOR UPDATE) s ORDER BY a"],
        &["SELECT a FROM {c}_t WHERE a IN (SELECT a FROM {c}_t FOR SHARE) ORDER BY a"],
        &["SELECT a FROM {c}_t ORDER BY a /* c */ FOR\nUPDATE"],
        &["WITH l AS (SELECT a FROM {c}_t FOR UPDATE) SELECT count(*) FROM l"],
        &["@copyout COPY {c}_t TO STDOUT"],
        &["@copyout COPY (SELECT * FROM {c}_t ORDER BY a) TO STDOUT WITH (FORMAT csv)"],
        &["@copyout copy (insert into {c}_t values (5, 'c') returning a) to stdout"],
        &["@copyout COPY (SELECT bw(t) FROM bt t) TO STDOUT"],
        &["@copyin COPY {c}_t FROM STDIN|3\tz\n"],
        &["@copyin copy {c}_t (a, b) from stdin with (format csv)|4,w\n"],
        &["CALL bp()"],
        &["call public.bp()"],
        &["CALL bp_inout(1)"],
        &["MERGE INTO {c}_t t USING (VALUES (1, 'm')) v(a, b) ON t.a = v.a WHEN MATCHED THEN UPDATE SET b = v.b"],
        &["merge into {c}_t t using (select 3 as a) v on t.a = v.a when not matched then insert values (v.a, 'n')"],
        &["/* c */ MERGE INTO {c}_t t USING {c}_t s ON t.a = s.a WHEN MATCHED THEN DELETE"],
        &["SELECT 1; INSERT INTO {c}_t VALUES (3, 'z')"],
        &["INSERT INTO {c}_t VALUES (3, 'z'); SELECT count(*) FROM {c}_t"],
        &["SELECT 1; SELECT nextval('{c}_s')"],
        &["/* x */ SELECT 1 ; ; UPDATE {c}_t SET b = 'q' WHERE a = 2"],
        &["SELECT 1; SELECT bw_text('m')"],
        &[" insert into {c}_t values (3, 'z')"],
        &["-- c\nINSERT INTO {c}_t VALUES (3, 'z')"],
        &["/* a */ /* b */ DELETE FROM {c}_t WHERE a = 1"],
        &["UPDATE {c}_t SET b = upper(b) RETURNING a, b"],
        &["INSERT INTO {c}_t VALUES (3, 'z') ON CONFLICT (a) DO NOTHING"],
        &["INSERT INTO {c}_t VALUES (1, 'z') ON CONFLICT (a) DO UPDATE SET b = excluded.b"],
        &["TRUNCATE {c}_t"],
        &["BEGIN", "LOCK TABLE {c}_t IN ACCESS EXCLUSIVE MODE", "SELECT count(*) FROM {c}_t", "COMMIT"],
        &["ALTER TABLE {c}_t ADD COLUMN c int"],
        &["TABLE {c}_t"],
        &["VALUES (1), (2)"],
        &["SELECT count(*) FROM {c}_t"],
        &["SELECT nextval('{c}_s') FROM {c}_t ORDER BY a"],
        &["INSERT INTO {c}_t SELECT 3, bw_text('i')"],
        &["LISTEN {c}", "NOTIFY {c}", "@notes"],
        &["NOTIFY {c}, 'x'"],
        &["VACUUM {c}_t"],
        &["ANALYZE {c}_t"],
        &["CREATE INDEX ON {c}_t (b)"],
        &["COMMENT ON TABLE {c}_t IS 'c'"],
        &["REFRESH MATERIALIZED VIEW {c}_mv"],
        &["SELECT 1 FROM {c}_t WHERE a = 1 FOR UPDATE; SELECT 2"],
    ]
    .into_iter()
    .enumerate()
    {
        let mut s: Vec<&'static str> = steps.to_vec();
        s.extend(after);
        let setup = if steps[0].starts_with("REFRESH") {
            "CREATE MATERIALIZED VIEW {c}_mv AS SELECT count(*) FROM {c}_t;"
        } else {
            ""
        };
        b.add(c, &format!("{}", i + 1), setup, &s);
    }

    b.cases
}
