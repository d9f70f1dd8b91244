//! Tests for the function and server-state rules of `classify.rs` (issue 13): calls hidden in
//! attribute notation and keyword syntax, unknown functions, overrides that apply to the
//! built-in only, functions that fail on a standby, server-state questions and session state
//! created by function calls.

use std::collections::HashMap;

use super::tests::{defaults, expect, expect_with, functions, NOT_VOLATILE};
use super::*;
use StatementClass::*;

#[test]
fn attribute_notation_is_a_call() {
    // `t.f` and `(t).f` mean `f(t)` when f is a function taking t's row type.
    expect(&[
        ("SELECT t.nextval FROM t", Write),
        ("SELECT (t).nextval FROM t", Write),
        ("SELECT (t.x).setval FROM t", Write),
        ("SELECT a FROM t WHERE t.random > 0", Write),
        ("SELECT s.t.\"MyFn\" FROM s.t", Write),
        // Columns, and functions that do not write, are fine.
        ("SELECT t.a, t.b FROM t", Read),
        ("SELECT (t).a FROM t", Read),
        ("SELECT t.length FROM t", Read),
        ("SELECT t.* FROM t", Read),
        ("SELECT x.a FROM t x JOIN u ON x.id = u.id", Read),
    ]);
}

#[test]
fn keyword_syntax_calls_are_checked_by_name() {
    // Each keyword syntax is a call of an ordinary function that a user can overload with a
    // writing one: the name is judged like any other call.
    let cases = [
        ("SELECT CEIL(a) FROM t", "ceil"),
        ("SELECT FLOOR(a) FROM t", "floor"),
        ("SELECT SUBSTRING(s FROM 2 FOR 3) FROM t", "substring"),
        ("SELECT OVERLAY(s PLACING 'x' FROM 2) FROM t", "overlay"),
        ("SELECT POSITION('a' IN s) FROM t", "position"),
        ("SELECT TRIM(BOTH 'x' FROM s) FROM t", "btrim"),
        ("SELECT TRIM(s) FROM t", "btrim"),
        ("SELECT TRIM(LEADING 'x' FROM s) FROM t", "ltrim"),
        ("SELECT TRIM(TRAILING 'x' FROM s) FROM t", "rtrim"),
        ("SELECT EXTRACT(year FROM d) FROM t", "extract"),
        ("SELECT d AT TIME ZONE 'UTC' FROM t", "timezone"),
        ("SELECT s IS NORMALIZED FROM t", "is_normalized"),
        ("SELECT CONVERT(s, 'UTF8', 'LATIN1') FROM t", "convert"),
    ];
    for (sql, name) in cases {
        expect(&[(sql, Read)]);
        let stable: Vec<&str> = NOT_VOLATILE
            .iter()
            .copied()
            .filter(|n| *n != name)
            .collect();
        let writing = FunctionPolicy::new(Some(functions(&[name], &stable)), [], []);
        expect_with(&writing, &[(sql, Write)]);
        let unknown = FunctionPolicy::new(Some(functions(&[], &stable)), [], []);
        expect_with(&unknown, &[(sql, Write)]);
    }
}

#[test]
fn unicode_escaped_identifiers_are_decoded() {
    assert_eq!(decode_escapes("n\\0065xtval"), Some("nextval".into()));
    assert_eq!(decode_escapes("\\+01F600\\\\"), Some("\u{1F600}\\".into()));
    assert_eq!(decode_escapes("bad\\00"), None);
    expect(&[
        // U&"n\0065xtval"(...) is nextval(...).
        ("SELECT U&\"n\\0065xtval\"('s')", Write),
        ("SELECT t.U&\"n\\0065xtval\" FROM t", Write),
        // Both the escaped and the decoded name are judged: the raw one is unknown.
        ("SELECT U&\"l\\0065ngth\"('s')", Write),
        ("SELECT U&\"bad\\00\"('s')", Write),
    ]);
}

fn decode_escapes(s: &str) -> Option<String> {
    policy::decode_unicode_escapes(s)
}

#[test]
fn unknown_functions_are_writes() {
    // Created after the load (by another session): anything it does is possible.
    expect(&[
        ("SELECT brand_new_fn(1)", Write),
        ("SELECT * FROM brand_new_srf()", Write),
        ("SELECT count(*) FROM t WHERE brand_new_fn(a)", Write),
        // But an unknown attribute name is a column.
        ("SELECT t.brand_new_column FROM t", Read),
        // SQL constructs that look like calls are not functions.
        (
            "SELECT coalesce(a, 0), greatest(a, b), least(a, b), nullif(a, 0) FROM t",
            Read,
        ),
        ("SELECT \"coalesce\"(a, 0) FROM t", Write),
    ]);
}

#[test]
fn function_ddl_is_detected_for_a_reload() {
    for sql in [
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "create or replace function f() returns int language sql as $$select 1$$",
        "ALTER FUNCTION f() VOLATILE",
        "DROP FUNCTION f()",
        "CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'",
        "DROP PROCEDURE IF EXISTS p",
        "ALTER ROUTINE f() STABLE",
        "CREATE EXTENSION pgcrypto",
        "DROP SCHEMA s CASCADE",
        "DO $$ BEGIN EXECUTE 'CREATE FUNCTION g() RETURNS int AS ''SELECT 1'' LANGUAGE sql'; END $$",
        "SELECT 1; CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ] {
        assert!(may_change_functions(sql), "{sql}");
    }
    for sql in [
        "SELECT f()",
        "CREATE TABLE t (a int)",
        "INSERT INTO t SELECT 1",
        "SELECT 'CREATE FUNCTION'",
        "CREATE TEMP TABLE x (a int); SELECT function FROM t",
    ] {
        assert!(!may_change_functions(sql), "{sql}");
    }
}

#[test]
fn read_overrides_apply_to_the_builtin_only() {
    let info = |may_write, only_pg_catalog| FunctionInfo {
        may_write,
        only_pg_catalog,
    };
    let mut known: HashMap<String, FunctionInfo> = functions(&[], NOT_VOLATILE);
    // A user `public.random(int)` that writes exists next to pg_catalog.random().
    known.insert("random".into(), info(true, false));
    known.insert("clock_timestamp".into(), info(true, true));
    let p = FunctionPolicy::new(
        Some(known),
        ["random".to_string(), "clock_timestamp".to_string()],
        [],
    );
    assert!(p.may_write(None, "random"));
    assert!(p.may_write(Some("public"), "random"));
    assert!(!p.may_write(Some("pg_catalog"), "random"));
    assert!(!p.may_write(None, "clock_timestamp"));
    assert!(p.may_write(Some("public"), "clock_timestamp"));
    expect_with(
        &p,
        &[
            ("SELECT random()", Write),
            ("SELECT public.random(1)", Write),
            ("SELECT pg_catalog.random()", Read),
            ("SELECT clock_timestamp()", Read),
            ("SELECT myschema.clock_timestamp()", Write),
        ],
    );
}

#[test]
fn functions_that_fail_on_a_standby_go_to_the_primary() {
    // STABLE or IMMUTABLE in pg_proc, but they assign a transaction ID or refuse to run
    // during recovery.
    let p = defaults();
    for name in [
        "txid_current",
        "pg_current_xact_id",
        "pg_walfile_name",
        "pg_walfile_name_offset",
    ] {
        let mut known = p.known_for_tests().unwrap_or_default();
        known.insert(
            name.into(),
            FunctionInfo {
                may_write: false,
                only_pg_catalog: true,
            },
        );
        let p = FunctionPolicy::new(
            Some(known),
            crate::config::DEFAULT_READ_FUNCTIONS
                .iter()
                .map(|s| s.to_string()),
            crate::config::DEFAULT_WRITE_FUNCTIONS
                .iter()
                .map(|s| s.to_string()),
        );
        expect_with(&p, &[(&format!("SELECT {name}()"), Write)]);
    }
    expect_with(
        &p,
        &[
            ("SELECT txid_current_if_assigned()", Read),
            ("SELECT pg_current_wal_lsn()", Write),
            ("SELECT pg_switch_wal()", Write),
            ("SELECT pg_notify('c', 'x')", Write),
            ("SELECT pg_create_restore_point('r')", Write),
            // Even before the functions are loaded.
        ],
    );
    expect_with(
        &FunctionPolicy::new(
            None,
            crate::config::DEFAULT_READ_FUNCTIONS
                .iter()
                .map(|s| s.to_string()),
            crate::config::DEFAULT_WRITE_FUNCTIONS
                .iter()
                .map(|s| s.to_string()),
        ),
        &[("SELECT pg_catalog.txid_current()", Write)],
    );
}

#[test]
fn server_state_questions_read_on_the_primary() {
    expect_with(
        &defaults(),
        &[
            ("SELECT pg_is_in_recovery()", PrimaryRead),
            ("SELECT pg_last_wal_replay_lsn()", PrimaryRead),
            (
                "SELECT current_setting('transaction_read_only')",
                PrimaryRead,
            ),
            (
                "SELECT current_setting('DEFAULT_TRANSACTION_READ_ONLY')",
                PrimaryRead,
            ),
            ("SELECT current_setting($1)", PrimaryRead),
            ("SELECT current_setting('work_mem')", Read),
            ("SHOW transaction_read_only", PrimaryRead),
            ("SHOW default_transaction_read_only", PrimaryRead),
            ("SHOW in_hot_standby", PrimaryRead),
            ("SHOW work_mem", Read),
            ("SELECT * FROM pg_stat_activity", PrimaryRead),
            (
                "SELECT count(*) FROM pg_catalog.pg_stat_replication",
                PrimaryRead,
            ),
            ("SELECT * FROM pg_locks l JOIN t ON true", PrimaryRead),
            ("SELECT gid FROM pg_prepared_xacts", PrimaryRead),
            ("SELECT * FROM pg_stat_user_tables", PrimaryRead),
            ("SELECT * FROM myschema.pg_stat_activity", Read),
            ("SELECT * FROM pg_stat_get_activity(NULL)", Write),
            ("EXPLAIN SELECT pg_is_in_recovery()", Read),
            ("EXPLAIN ANALYZE SELECT pg_is_in_recovery()", PrimaryRead),
            (
                "COPY (SELECT * FROM pg_stat_activity) TO STDOUT",
                PrimaryRead,
            ),
            // A write stays a write.
            ("SELECT pg_is_in_recovery(), nextval('s')", Write),
        ],
    );
    // The setting's name decides, so such texts are not keyed without their literals.
    assert_eq!(literal_free_key("SELECT current_setting('work_mem')"), None);
    assert_eq!(literal_free_key("SELECT set_config('a', 'b', false)"), None);
    let cache = ClassifyCache::new(16);
    cache.set_policy(defaults());
    assert_eq!(
        &*cache.classify("SELECT current_setting('work_mem')"),
        &[Read]
    );
    assert_eq!(
        &*cache.classify("SELECT current_setting('transaction_read_only')"),
        &[PrimaryRead]
    );
}

#[test]
fn state_creating_statements_pin() {
    expect_with(
        &defaults(),
        &[
            ("SELECT set_config('search_path', 'x', false)", PinToPrimary),
            ("SELECT set_config('search_path', $1, $2)", PinToPrimary),
            ("SELECT set_config('search_path', 'x', true)", PinToPrimary),
            ("SELECT * FROM set_config('a', 'b', false)", PinToPrimary),
            ("SELECT setseed(0.5)", PinToPrimary),
            // Session-level advisory locks live on the connection; the _xact_ ones do not.
            ("SELECT pg_advisory_lock(42)", PinToPrimary),
            ("SELECT pg_try_advisory_lock_shared(1, 2)", PinToPrimary),
            (
                "SELECT pg_catalog.pg_advisory_lock_shared(42)",
                PinToPrimary,
            ),
            ("SELECT pg_advisory_xact_lock(42)", Write),
            (
                "SELECT 1 FROM t WHERE a = (SELECT setseed(0.5))",
                PinToPrimary,
            ),
            (
                "INSERT INTO t VALUES (set_config('a', 'b', false))",
                PinToPrimary,
            ),
            (
                "DO $$ BEGIN CREATE TEMP TABLE x (a int); END $$",
                PinToPrimary,
            ),
            (
                "do language plpgsql $$ BEGIN PERFORM 1; END $$",
                PinToPrimary,
            ),
            (
                "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                PinToPrimary,
            ),
            (
                "CREATE PROCEDURE pg_temp.p() LANGUAGE sql AS 'SELECT 1'",
                PinToPrimary,
            ),
            (
                "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                Write,
            ),
            ("SELECT 1 INTO TEMP t UNION SELECT 2", PinToPrimary),
            ("SELECT 1 INTO t UNION SELECT 2", Write),
            ("(SELECT 1 INTO TEMPORARY t) UNION (SELECT 2)", PinToPrimary),
            (
                "EXPLAIN ANALYZE CREATE TEMP TABLE x AS SELECT 1",
                PinToPrimary,
            ),
            ("EXPLAIN ANALYZE SELECT setseed(0.5)", PinToPrimary),
            ("EXPLAIN CREATE TEMP TABLE x AS SELECT 1", Write),
            // Statements sqlparser rejects that may create session state.
            (
                "CREATE TEMP TABLE x (a int) ON COMMIT PRESERVE ROWS WITH (fillfactor = 'x' 1)",
                PinToPrimary,
            ),
            ("SELECT * FROM pg_temp.t WHERE a = ANY ((", PinToPrimary),
            ("LOAD 'auto_explain'", PinToPrimary),
            ("garbage", Write),
        ],
    );
}
