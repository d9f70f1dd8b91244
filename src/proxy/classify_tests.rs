//! Tests for `classify.rs` (kept in a sibling file to keep the module itself short).

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use std::collections::HashMap;

use super::*;
use StatementClass::*;

pub(super) fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Built-in functions used below that are not VOLATILE (all in pg_catalog).
pub(super) const NOT_VOLATILE: &[&str] = &[
    "count",
    "sum",
    "max",
    "min",
    "array_agg",
    "generate_series",
    "unnest",
    "now",
    "lower",
    "length",
    "extract",
    "substring",
    "btrim",
    "ltrim",
    "rtrim",
    "position",
    "overlay",
    "ceil",
    "floor",
    "timezone",
    "convert",
    "is_normalized",
    "current_setting",
    "txid_current_if_assigned",
    "myfn",
];

/// The pg_proc entries of `volatile` (may write) and `stable` (may not), all in pg_catalog.
pub(super) fn functions(volatile: &[&str], stable: &[&str]) -> HashMap<String, FunctionInfo> {
    let info = |may_write| FunctionInfo {
        may_write,
        only_pg_catalog: true,
    };
    let mut m: HashMap<String, FunctionInfo> = stable
        .iter()
        .map(|n| (n.to_string(), info(false)))
        .collect();
    m.extend(volatile.iter().map(|n| (n.to_string(), info(true))));
    m
}

/// Roughly what pg_proc reports for the functions used below, with the default overrides.
pub(super) fn pg() -> FunctionPolicy {
    let volatile = [
        "nextval",
        "setval",
        "random",
        "pg_advisory_lock",
        "MyFn",
        "set_config",
        "setseed",
        "pg_is_in_recovery",
        "pg_last_wal_replay_lsn",
        "pg_stat_get_activity",
    ];
    FunctionPolicy::new(Some(functions(&volatile, NOT_VOLATILE)), [], [])
}

/// [`pg()`] with the default override lists.
pub(super) fn defaults() -> FunctionPolicy {
    FunctionPolicy::new(
        pg().known_for_tests(),
        crate::config::DEFAULT_READ_FUNCTIONS
            .iter()
            .map(|s| s.to_string()),
        crate::config::DEFAULT_WRITE_FUNCTIONS
            .iter()
            .map(|s| s.to_string()),
    )
}

/// Asserts that each SQL text is one statement of the expected class under `policy`.
pub(super) fn expect_with(policy: &FunctionPolicy, cases: &[(&str, StatementClass)]) {
    for (sql, want) in cases {
        assert_eq!(classify(sql, policy), vec![*want], "SQL: {sql}");
    }
}

pub(super) fn expect(cases: &[(&str, StatementClass)]) {
    expect_with(&pg(), cases);
}

#[test]
fn plain_select_is_read() {
    expect(&[
        ("SELECT 1", Read),
        ("select a, b from t where a = $1 order by b limit 10", Read),
    ]);
}

#[test]
fn volatile_function_makes_write() {
    expect(&[
        ("SELECT nextval('s')", Write),
        ("SELECT public.NextVal('s')", Write),
        ("SELECT \"MyFn\"(1)", Write),
        ("SELECT 1 FROM t ORDER BY random()", Write),
    ]);
}

#[test]
fn quoted_name_keeps_case_and_unquoted_folds() {
    // "myfn" is not volatile (only "MyFn" is): unquoted MyFn folds to myfn.
    expect(&[("SELECT MyFn(1)", Read), ("SELECT \"MyFn\"(1)", Write)]);
}

#[test]
fn aggregates_pass_once_loaded() {
    expect(&[
        ("SELECT count(*) FROM t", Read),
        (
            "SELECT count(*) OVER (PARTITION BY a ORDER BY b) FROM t",
            Read,
        ),
        (
            "SELECT array_agg(a ORDER BY b) FILTER (WHERE a > 1) FROM t",
            Read,
        ),
    ]);
}

#[test]
fn any_function_writes_while_not_loaded() {
    let policy = FunctionPolicy::default();
    assert!(!policy.is_loaded());
    expect_with(
        &policy,
        &[
            ("SELECT count(*) FROM t", Write),
            ("SELECT * FROM generate_series(1, 3)", Write),
            ("SELECT 1", Read),
            // Keyword value functions are not calls of anything that could write.
            ("SELECT CURRENT_TIMESTAMP, current_user, session_user", Read),
            (
                "SELECT coalesce(a, 1), greatest(a, 2), nullif(a, 3) FROM t",
                Read,
            ),
            // Keyword syntaxes call ordinary (overloadable) functions: not known yet.
            ("SELECT extract(year FROM d) FROM t", Write),
            ("SELECT substring(s FROM 1) FROM t", Write),
            // Attribute notation may be a call, and nothing is known yet.
            ("SELECT t.a FROM t", Write),
        ],
    );
}

#[test]
fn read_override_wins_over_volatile_and_unloaded() {
    let loaded = FunctionPolicy::new(
        Some(functions(&["pg_sleep"], &[])),
        names(&["pg_sleep"]),
        [],
    );
    assert!(!loaded.may_write(None, "pg_sleep"));
    expect_with(&loaded, &[("SELECT pg_sleep(1)", Read)]);
    // Until loaded, only an explicit pg_catalog call is known to be the built-in.
    let unloaded = FunctionPolicy::new(None, names(&["count"]), []);
    expect_with(
        &unloaded,
        &[
            ("SELECT pg_catalog.count(*) FROM t", Read),
            ("SELECT count(*) FROM t", Write),
            ("SELECT sum(a) FROM t", Write),
        ],
    );
}

#[test]
fn write_override_wins() {
    let policy = FunctionPolicy::new(
        Some(functions(&[], &["audit_read", "bump", "other"])),
        names(&["audit_read"]),
        names(&["audit_read", "bump"]),
    );
    assert!(policy.may_write(None, "audit_read"));
    expect_with(
        &policy,
        &[
            ("SELECT audit_read(1)", Write),
            ("SELECT bump()", Write),
            ("SELECT other()", Read),
            ("SELECT t.bump FROM t", Write),
        ],
    );
}

#[test]
fn functions_found_everywhere() {
    expect(&[
        ("SELECT * FROM generate_series(1, 10) g(x)", Read),
        ("SELECT * FROM pg_catalog.generate_series(1, 10)", Read),
        ("SELECT * FROM unnest(ARRAY[1, 2])", Read),
        ("SELECT x FROM t WHERE a IN (SELECT nextval('s'))", Write),
        ("SELECT * FROM t WHERE EXISTS (SELECT random())", Write),
        ("SELECT * FROM nextval('s')", Write),
        ("SELECT * FROM t, LATERAL nextval('s')", Write),
        ("SELECT * FROM (SELECT nextval('s')) d", Write),
        ("WITH c AS (SELECT nextval('s')) SELECT * FROM c", Write),
        ("VALUES (1), (nextval('s'))", Write),
        ("SELECT a FROM t GROUP BY a HAVING max(b) > random()", Write),
        ("SELECT * FROM t LIMIT (SELECT nextval('s'))", Write),
        ("SELECT coalesce(a, nextval('s')) FROM t", Write),
        ("SELECT CASE WHEN a THEN setval('s', 1) END FROM t", Write),
        ("SELECT x.* FROM t x JOIN u ON x.a = nextval('s')", Write),
        ("SELECT (nextval('s'))::text", Write),
    ]);
}

#[test]
fn locking_clauses_write() {
    expect(&[
        ("SELECT * FROM t FOR UPDATE", Write),
        ("SELECT * FROM t FOR SHARE", Write),
        ("SELECT * FROM t FOR UPDATE OF t NOWAIT", Write),
        ("SELECT * FROM t FOR SHARE SKIP LOCKED", Write),
        ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", Write),
        // sqlparser 0.63 rejects these; unparsable means Write.
        ("SELECT * FROM t FOR NO KEY UPDATE", Write),
        ("SELECT * FROM t FOR KEY SHARE", Write),
    ]);
}

#[test]
fn data_modifying_ctes_write_and_read_ctes_read() {
    expect(&[
        ("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", Write),
        ("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x", Write),
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", Write),
        (
            "WITH r AS (SELECT 1), w AS (DELETE FROM t RETURNING *) SELECT * FROM r",
            Write,
        ),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", Write),
        ("WITH x AS (SELECT a FROM t) SELECT * FROM x", Read),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT n FROM r",
            Read,
        ),
    ]);
}

#[test]
fn select_into_writes_or_pins() {
    expect(&[
        ("SELECT a INTO t2 FROM t", Write),
        ("SELECT a INTO TEMP t2 FROM t", PinToPrimary),
        ("SELECT a INTO pg_temp.t2 FROM t", PinToPrimary),
        // Not the outermost SELECT, so only the query walk can see it.
        ("SELECT a INTO t2 FROM t UNION SELECT b FROM u", Write),
    ]);
}

#[test]
fn dml_writes() {
    expect(&[
        ("INSERT INTO t VALUES (1)", Write),
        ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO NOTHING", Write),
        (
            "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = excluded.b",
            Write,
        ),
        ("UPDATE t SET a = 1 WHERE b = 2", Write),
        ("DELETE FROM t WHERE a = 1", Write),
        (
            "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (s.a)",
            Write,
        ),
        ("TRUNCATE t", Write),
    ]);
}

#[test]
fn ddl_writes_and_temp_objects_pin() {
    expect(&[
        ("CREATE TABLE t (a int)", Write),
        ("CREATE UNLOGGED TABLE t (a int)", Write),
        ("CREATE TABLE t AS SELECT 1", Write),
        ("CREATE VIEW v AS SELECT 1", Write),
        ("CREATE INDEX CONCURRENTLY i ON t (a)", Write),
        ("ALTER TABLE t ADD COLUMN b int", Write),
        ("DROP TABLE t", Write),
        ("CREATE TEMP TABLE t (a int)", PinToPrimary),
        ("CREATE TEMPORARY TABLE t AS SELECT 1", PinToPrimary),
        ("CREATE LOCAL TEMP TABLE t (a int)", PinToPrimary),
        ("CREATE TABLE pg_temp.t (a int)", PinToPrimary),
        ("CREATE TEMP VIEW v AS SELECT 1", PinToPrimary),
        ("CREATE TEMP SEQUENCE s", PinToPrimary),
    ]);
}

#[test]
fn transaction_begin_modes() {
    expect(&[
        ("BEGIN", Begin { read_only: false }),
        ("BEGIN WORK", Begin { read_only: false }),
        ("START TRANSACTION", Begin { read_only: false }),
        ("BEGIN READ ONLY", Begin { read_only: true }),
        ("BEGIN READ WRITE", Begin { read_only: false }),
        ("START TRANSACTION READ ONLY", Begin { read_only: true }),
        (
            "START TRANSACTION READ ONLY, ISOLATION LEVEL REPEATABLE READ",
            Begin { read_only: true },
        ),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            Begin { read_only: false },
        ),
    ]);
}

#[test]
fn deferrable_modes_are_recovered_after_parse_failure() {
    expect(&[
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
            Begin { read_only: true },
        ),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE, DEFERRABLE, READ ONLY;",
            Begin { read_only: true },
        ),
        ("BEGIN NOT DEFERRABLE", Begin { read_only: false }),
        ("BEGIN DEFERRABLE, READ WRITE", Begin { read_only: false }),
        (
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
            SetTransaction { read_only: true },
        ),
        // The rewrite never turns something else into a read or a transaction statement.
        ("BEGIN DEFERRABLE; DELETE FROM t", Write),
        ("SELECT * FROM t WHERE DEFERRABLE FOR NO KEY UPDATE", Write),
        ("BEGIN DEFERRABLE DEFERRABLE garbage(", Write),
    ]);
}

#[test]
fn set_transaction() {
    expect(&[
        (
            "SET TRANSACTION READ ONLY",
            SetTransaction { read_only: true },
        ),
        (
            "SET TRANSACTION READ WRITE",
            SetTransaction { read_only: false },
        ),
        (
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            SetTransaction { read_only: false },
        ),
        (
            "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
            SetTransaction { read_only: false },
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            SessionSet,
        ),
    ]);
}

#[test]
fn transaction_end() {
    expect(&[
        ("COMMIT", EndTransaction),
        ("COMMIT WORK", EndTransaction),
        ("END", EndTransaction),
        ("ROLLBACK", EndTransaction),
        ("ABORT", EndTransaction),
        // A chained transaction keeps going on the same backend.
        ("COMMIT AND CHAIN", Write),
    ]);
}

#[test]
fn savepoints_are_neutral() {
    expect(&[
        ("SAVEPOINT a", Neutral),
        ("RELEASE SAVEPOINT a", Neutral),
        ("RELEASE a", Neutral),
        ("ROLLBACK TO SAVEPOINT a", Neutral),
        ("ROLLBACK TO a", Neutral),
    ]);
}

#[test]
fn session_settings() {
    expect(&[
        ("SET x = 1", SessionSet),
        ("SET SESSION x TO 1", SessionSet),
        ("SET search_path TO a, b", SessionSet),
        ("SET application_name = 'app'", SessionSet),
        ("SET TIME ZONE 'UTC'", SessionSet),
        ("SET ROLE r", SessionSet),
        ("SET SESSION AUTHORIZATION u", SessionSet),
        ("SET NAMES 'UTF8'", SessionSet),
        ("RESET x", SessionSet),
        ("RESET ROLE", SessionSet),
        ("SET LOCAL x = 1", Neutral),
        ("SET LOCAL ROLE r", Neutral),
        ("SET LOCAL TIME ZONE 'UTC'", Neutral),
        ("RESET ALL", SessionReset),
        ("DISCARD ALL", SessionReset),
        ("DISCARD PLANS", SessionReset),
        ("DISCARD TEMP", SessionReset),
    ]);
}

#[test]
fn connection_bound_state_pins() {
    expect(&[
        ("PREPARE p (int) AS SELECT $1", PinToPrimary),
        ("PREPARE p AS SELECT 1", PinToPrimary),
        ("EXECUTE p(1)", PinToPrimary),
        ("EXECUTE p", PinToPrimary),
        ("DEALLOCATE p", PinToPrimary),
        ("DEALLOCATE PREPARE ALL", PinToPrimary),
        ("LISTEN ch", PinToPrimary),
        ("UNLISTEN ch", PinToPrimary),
        ("UNLISTEN *", PinToPrimary),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", PinToPrimary),
    ]);
}

#[test]
fn cursors() {
    expect(&[
        ("DECLARE c CURSOR FOR SELECT a FROM t", Read),
        (
            "DECLARE c BINARY SCROLL CURSOR WITHOUT HOLD FOR SELECT 1",
            Read,
        ),
        ("DECLARE c CURSOR FOR SELECT nextval('s')", Write),
        ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", Write),
        ("FETCH 5 FROM c", Read),
        ("FETCH NEXT FROM c", Read),
        ("CLOSE c", Read),
        ("CLOSE ALL", Read),
        // sqlparser 0.63 cannot parse MOVE; the fallback recognises it.
        ("MOVE NEXT IN c", Read),
        ("MOVE FORWARD 5 FROM c;", Read),
        ("MOVE ABSOLUTE -1 FROM c", Read),
        ("MOVE c; DELETE FROM t", Write),
        ("MOVE f(1)", Write),
        ("MOVE", Write),
    ]);
}

#[test]
fn other_writes() {
    expect(&[
        ("NOTIFY ch, 'x'", Write),
        ("LOCK TABLE t IN ACCESS SHARE MODE", Write),
        ("LOCK t", Write),
        ("COPY t FROM STDIN", Write),
        ("COPY t TO '/tmp/out'", Write),
        ("COPY t TO PROGRAM 'gzip'", Write),
        ("CALL p()", Write),
        ("DO $$ BEGIN END $$", PinToPrimary),
        ("VACUUM t", Write),
        ("ANALYZE t", Write),
        ("CHECKPOINT", Write),
        ("REINDEX TABLE t", Write),
        ("CLUSTER t", Write),
        ("REFRESH MATERIALIZED VIEW v", Write),
        ("GRANT SELECT ON t TO u", Write),
        ("REVOKE SELECT ON t FROM u", Write),
        ("PREPARE TRANSACTION 'x'", Write),
        ("COMMIT PREPARED 'x'", Write),
        ("TABLE t", Write),
    ]);
}

#[test]
fn copy_to_stdout_reads() {
    expect(&[
        ("COPY t TO STDOUT", Read),
        ("COPY t (a, b) TO STDOUT WITH (FORMAT csv)", Read),
        ("COPY (SELECT a FROM t) TO STDOUT", Read),
        ("COPY (SELECT nextval('s')) TO STDOUT", Write),
        ("COPY (SELECT * FROM t FOR UPDATE) TO STDOUT", Write),
    ]);
}

#[test]
fn explain() {
    expect(&[
        ("EXPLAIN SELECT 1", Read),
        ("EXPLAIN VERBOSE SELECT * FROM t", Read),
        ("EXPLAIN ANALYZE SELECT * FROM t", Read),
        ("EXPLAIN (ANALYZE, BUFFERS) SELECT 1", Read),
        ("EXPLAIN DELETE FROM t", Read),
        ("EXPLAIN ANALYZE DELETE FROM t", Write),
        ("EXPLAIN (ANALYZE) DELETE FROM t", Write),
        ("EXPLAIN ANALYZE SELECT nextval('s')", Write),
        ("EXPLAIN EXECUTE p", Write),
    ]);
}

#[test]
fn show_and_values_read() {
    expect(&[
        ("SHOW x", Read),
        ("SHOW ALL", PrimaryRead),
        ("SHOW search_path", Read),
        ("VALUES (1)", Read),
        ("VALUES (1), (2) ORDER BY 1", Read),
    ]);
}

#[test]
fn multi_statement_strings() {
    let p = pg();
    assert_eq!(classify("SELECT 1; SELECT 2", &p), vec![Read, Read]);
    assert_eq!(
        classify("SELECT 1; INSERT INTO t VALUES (1)", &p),
        vec![Read, Write]
    );
    assert_eq!(
        classify("BEGIN; SELECT 1; COMMIT;", &p),
        vec![Begin { read_only: false }, Read, EndTransaction]
    );
    // One bad statement poisons the whole string.
    assert_eq!(classify("SELECT 1; DO $$ $$", &p), vec![PinToPrimary]);
}

#[test]
fn empty_and_garbage() {
    let p = pg();
    for empty in ["", "   ", "  -- c\n", "/* only a comment */", ";"] {
        assert_eq!(
            classify(empty, &p),
            Vec::<StatementClass>::new(),
            "{empty:?}"
        );
    }
    for junk in [
        "garbage",
        "SELEC 1",
        "SELECT (",
        "'unterminated",
        "\u{0}\u{1}",
    ] {
        assert_eq!(classify(junk, &p), vec![Write], "{junk:?}");
    }
}

/// Pieces of SQL the random statements are made of: keywords, punctuation and the openers
/// of quotes, comments and dollar strings that the tokenizer must cope with unterminated.
const FRAGMENTS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "(",
    ")",
    ",",
    ";",
    "'",
    "\"",
    "$$",
    "$1",
    "::",
    "--",
    "/*",
    "*/",
    "FOR",
    "UPDATE",
    "WITH",
    "AS",
    "INSERT",
    "MOVE",
    "BEGIN",
    "DEFERRABLE",
    "NOT",
    "f(",
    "1",
    "-",
    "ALL",
    "é",
    "\u{0}",
    "\n",
    "E'\\",
    "[",
    "]",
    "*",
];

/// Random SQL-ish text: up to 11 pieces, each followed by a space; a piece is one of
/// [`FRAGMENTS`] (3 in 4) or up to 5 raw bytes, lossily decoded, which exercise the tokenizer
/// on arbitrary characters (1 in 4).
fn arb_sql() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => proptest::sample::select(FRAGMENTS).prop_map(str::to_string),
        1 => proptest::collection::vec(any::<u8>(), 0..6)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| {
        pieces.into_iter().fold(String::new(), |mut sql, piece| {
            sql.push_str(&piece);
            sql.push(' ');
            sql
        })
    })
}

#[test]
fn random_input_never_panics() {
    let p = pg();
    // proptest reports (and shrinks) any input that panics or breaks the property.
    let mut runner = TestRunner::new(ProptestConfig::with_cases(3000));
    let result = runner.run(&arb_sql(), |sql| {
        let classes = classify(&sql, &p);
        prop_assert!(classes.len() <= sql.len(), "{sql:?}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Deep nesting hits the parser's recursion limit instead of the stack.
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(classify(&deep, &p), vec![Write]);
}

#[test]
fn cache_counts_hits_and_set_policy_clears() {
    let cache = ClassifyCache::new(16);
    assert!(cache.is_empty());
    assert!(!cache.policy_loaded());
    // Not loaded: count() may write.
    assert_eq!(&*cache.classify("SELECT count(*) FROM t"), &[Write]);
    assert_eq!(&*cache.classify("SELECT count(*) FROM t"), &[Write]);
    assert_eq!(cache.stats(), (1, 1));
    assert_eq!(cache.len(), 1);

    cache.set_policy(pg());
    assert!(cache.policy_loaded());
    assert!(cache.is_empty());
    assert_eq!(&*cache.classify("SELECT count(*) FROM t"), &[Read]);
    assert_eq!(cache.stats(), (1, 2));
    assert_eq!(&*cache.classify("SELECT count(*) FROM t"), &[Read]);
    assert_eq!(cache.stats(), (2, 2));
}

#[test]
fn cache_is_bounded_and_skips_huge_sql() {
    let cache = ClassifyCache::new(3);
    // Distinct shapes (different column names), not just different literals.
    for i in 0..10 {
        cache.classify(&format!("SELECT c{i}"));
        assert!(cache.len() <= 3);
    }
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.stats(), (0, 10));

    let huge = format!("SELECT 1{}", " ".repeat(MAX_CACHED_SQL_LEN));
    let cache = ClassifyCache::new(3);
    assert_eq!(&*cache.classify(&huge), &[Read]);
    assert_eq!(&*cache.classify(&huge), &[Read]);
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.stats(), (0, 2));

    let disabled = ClassifyCache::new(0);
    disabled.classify("SELECT 1");
    assert!(disabled.is_empty());
}

/// The lookup key is built in a buffer reused from statement to statement: a short key after
/// a long one, or after a text that has none, is looked up as itself.
#[test]
fn cache_keys_do_not_carry_over_between_statements() {
    let cache = ClassifyCache::new(16);
    let long = format!(
        "UPDATE t SET a = 1 WHERE b IN ({})",
        vec!["2"; 5000].join(", ")
    );
    assert_eq!(&*cache.classify(&long), &[Write]);
    assert_eq!(&*cache.classify("SELECT 7"), &[Read]);
    assert_eq!(&*cache.classify("SELECT 8"), &[Read]);
    // No literal, so no built key: keyed by its own text.
    assert_eq!(&*cache.classify("DELETE FROM t"), &[Write]);
    assert_eq!(&*cache.classify("SELECT 9"), &[Read]);
    assert_eq!(cache.stats(), (2, 3));
}

#[test]
fn cache_is_shareable_across_threads() {
    let cache = Arc::new(ClassifyCache::new(64));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    assert_eq!(&*cache.classify("SELECT 1"), &[Read]);
                }
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().is_ok());
    }
    let (hits, misses) = cache.stats();
    assert_eq!(hits + misses, 200);
    assert_eq!(cache.len(), 1);
}

#[test]
fn literal_free_keys_share_entries_only_across_literal_values() {
    let k = |s: &str| literal_free_key(s);
    assert_eq!(
        k("SELECT abalance FROM pgbench_accounts WHERE aid = 42;"),
        k("SELECT abalance FROM pgbench_accounts WHERE aid = 9913;")
    );
    assert_eq!(
        k("SELECT abalance FROM pgbench_accounts WHERE aid = 42;").as_deref(),
        Some("\0SELECT abalance FROM pgbench_accounts WHERE aid = ?;")
    );
    assert_eq!(
        k("UPDATE t1 SET v = 'it''s' WHERE id = 1.5e3").as_deref(),
        Some("\0UPDATE t1 SET v = ? WHERE id = ?")
    );
    // Identifiers keep their digits, quoted identifiers are not literals.
    assert_eq!(
        k("SELECT x2, \"col 1\"\"q\", '7' FROM t3").as_deref(),
        Some("\0SELECT x2, \"col 1\"\"q\", ? FROM t3")
    );
    // A different function or table is a different key.
    assert_ne!(k("SELECT f(1)"), k("SELECT g(1)"));
    assert_ne!(k("SELECT 1 FROM a"), k("SELECT 1 FROM b"));
    // Nothing to replace, or text this lexer does not fully understand: exact-text keys.
    for sql in [
        "SELECT now()",
        "SELECT 1 -- 2",
        "SELECT /* 1 */ 2",
        "SELECT $1",
        "SELECT $$a$$",
        "SELECT E'\\n'",
        "SELECT 'a\\'",
        "SELECT 'unterminated",
        "SELECT \"unterminated",
        "SELECT U&'d\\0061t'",
    ] {
        assert_eq!(k(sql), None, "{sql}");
    }
}

#[test]
fn cache_parses_a_statement_shape_once() {
    let cache = ClassifyCache::new(16);
    assert_eq!(&*cache.classify("SELECT v FROM t WHERE id = 1"), &[Read]);
    assert_eq!(&*cache.classify("SELECT v FROM t WHERE id = 2"), &[Read]);
    assert_eq!(
        &*cache.classify("UPDATE t SET v = 'x' WHERE id = 2"),
        &[Write]
    );
    assert_eq!(
        &*cache.classify("UPDATE t SET v = 'y' WHERE id = 3"),
        &[Write]
    );
    assert_eq!(cache.stats(), (2, 2));
    assert_eq!(cache.len(), 2);
}
