//! SQL statement classification for read/write splitting.
//!
//! Every statement the proxy forwards is parsed with `sqlparser` (PostgreSQL dialect) and mapped to a
//! [`StatementClass`] that tells the router where it may run. The rule throughout is *conservative*:
//! anything that does not parse, any AST shape not explicitly recognised, and any function call that
//! might write is classified [`StatementClass::Write`], because sending a write to a replica fails (or
//! worse, sending a read that has side effects there loses them) while sending a read to the primary
//! only costs some load.
//!
//! Known blind spots, inherent to looking at SQL text only: functions called indirectly (through views,
//! operators, casts, column defaults, row-level-security policies or triggers) are not seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use sqlparser::ast::{
    ContextModifier, CopySource, CopyTarget, Declare, DeclareType, DescribeAlias, Expr, Ident,
    ObjectName, ObjectNamePart, Query, Reset, SelectInto, Set, SetExpr, Statement,
    TransactionAccessMode, TransactionMode,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

#[path = "classify_policy.rs"]
mod policy;
use policy::{pins_session, query_need, QueryNeed};
pub use policy::{FunctionInfo, FunctionPolicy};

/// What one SQL statement means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementClass {
    /// Provably only reads: SELECT / VALUES / SHOW, EXPLAIN (without ANALYZE, or ANALYZE of a read),
    /// COPY (query|table) TO STDOUT of a read, DECLARE cursor (no WITH HOLD) for a read,
    /// FETCH / MOVE / CLOSE — and calling no function that may write (see [`FunctionPolicy`]).
    Read,
    /// Only reads, but asks about the server's role or state (`pg_is_in_recovery()`, the
    /// read-only settings, WAL positions, `pg_stat_*`, `pg_locks`, ...), which a standby answers
    /// differently: on an `auto` listener it runs on the primary, without counting as a write
    /// (read-your-writes does not start) and without pinning.
    PrimaryRead,
    /// Must run on the primary: DML, DDL, locking SELECTs, data-modifying CTEs, SELECT INTO, LOCK,
    /// COPY FROM, CALL, NOTIFY, maintenance commands, GRANT/REVOKE, two-phase commit, any call of a
    /// function the policy says may write, and any statement that fails to parse.
    Write,
    /// BEGIN / START TRANSACTION; `read_only` is true only when the modes say READ ONLY.
    Begin {
        /// The transaction was started READ ONLY.
        read_only: bool,
    },
    /// SET TRANSACTION ...; `read_only` is true only when READ ONLY is given.
    SetTransaction {
        /// The transaction was switched to READ ONLY.
        read_only: bool,
    },
    /// COMMIT / END / ROLLBACK / ABORT (not ROLLBACK TO SAVEPOINT).
    EndTransaction,
    /// No routing preference of its own: SAVEPOINT, RELEASE, ROLLBACK TO SAVEPOINT, SET LOCAL ...
    Neutral,
    /// Session-level SET/RESET of one parameter (incl. SET ROLE, SET SESSION AUTHORIZATION,
    /// SET TIME ZONE, SET NAMES): must be replayed on every backend connection the session uses.
    SessionSet,
    /// RESET ALL, DISCARD ALL/PLANS/SEQUENCES/TEMP: resets session state.
    SessionReset,
    /// Creates state that lives on one backend connection only, so the session must stay on the
    /// primary from now on: PREPARE, EXECUTE, DEALLOCATE, CREATE TEMP table/view/sequence,
    /// CREATE FUNCTION/PROCEDURE pg_temp.f, SELECT INTO TEMP (anywhere in the query), LISTEN,
    /// UNLISTEN, DECLARE ... WITH HOLD, DO blocks, `set_config(..., false)`, `setseed()`,
    /// EXPLAIN ANALYZE of any of these, and unparsable statements that look state-creating.
    PinToPrimary,
}

/// Classify every statement of a (possibly multi-statement) SQL string.
///
/// A string that does not parse as a whole yields `vec![StatementClass::Write]` (with two narrow
/// exceptions for valid PostgreSQL that sqlparser 0.63 rejects: `MOVE` and `[NOT] DEFERRABLE`
/// transaction modes). An empty, whitespace-only or comment-only string yields `vec![]`.
pub fn classify(sql: &str, policy: &FunctionPolicy) -> Vec<StatementClass> {
    // Neither the parser nor the tokenizer is expected to panic, but this runs on untrusted client
    // input inside a proxy serving many sessions: a library bug must degrade to "send it to the
    // primary", not take the proxy down.
    std::panic::catch_unwind(|| match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => statements
            .iter()
            .map(|s| classify_statement(s, policy))
            .collect(),
        Err(_) => unparsed_fallback(sql).unwrap_or_else(|| vec![unparsed_class(sql)]),
    })
    .unwrap_or_else(|_| vec![StatementClass::Write])
}

/// Classify one parsed statement: a write that also creates session state through a function
/// call or a nested `INTO TEMP` pins (see [`pins_session`]).
fn classify_statement(stmt: &Statement, policy: &FunctionPolicy) -> StatementClass {
    match classify_kind(stmt, policy) {
        StatementClass::Write if pins_session(stmt) => StatementClass::PinToPrimary,
        c => c,
    }
}

/// The statement's class by kind. The final `_` arm is what makes new or unhandled statement
/// kinds (including other dialects' syntax the PostgreSQL parser accepts) fall into `Write`.
fn classify_kind(stmt: &Statement, policy: &FunctionPolicy) -> StatementClass {
    use StatementClass::*;
    match stmt {
        Statement::Query(q) => match top_level_into(q) {
            Some(into) if into.temporary || into_temp_schema(&into.targets) => PinToPrimary,
            Some(_) => Write,
            None => need_class(query_need(q, policy)),
        },
        Statement::Explain {
            describe_alias: DescribeAlias::Explain,
            analyze,
            statement,
            options,
            query_plan: false,
            estimate: false,
            ..
        } => {
            // `EXPLAIN (ANALYZE false)` is treated as analyzing too: rare, and erring costs only load.
            let analyzing = *analyze
                || options.iter().flatten().any(|o| {
                    o.name.value.eq_ignore_ascii_case("analyze")
                        || o.name.value.eq_ignore_ascii_case("analyse")
                });
            match classify_statement(statement, policy) {
                Read => Read,
                // Plain EXPLAIN only plans: PostgreSQL skips its read-only-transaction check for it,
                // so even EXPLAIN of DML runs fine on a standby.
                // (Not EXPLAIN of a pinning statement: EXPLAIN EXECUTE needs the prepared
                // statement, which exists on the primary only.)
                Write | PrimaryRead if !analyzing => Read,
                // EXPLAIN ANALYZE runs the statement, with all its effects.
                c @ (PrimaryRead | PinToPrimary) if analyzing => c,
                _ => Write,
            }
        }
        Statement::Copy {
            source,
            to: true,
            target: CopyTarget::Stdout,
            ..
        } => match source {
            CopySource::Table { .. } => Read,
            CopySource::Query(q) => need_class(query_need(q, policy)),
        },
        Statement::Declare { stmts } => classify_declare(stmts, policy),
        Statement::Fetch { into: None, .. } | Statement::Close { .. } => Read,
        Statement::ShowVariable { variable } => show_class(variable),
        Statement::StartTransaction {
            modes,
            modifier: None,
            statements,
            exception: None,
            ..
        } if statements.is_empty() => Begin {
            read_only: is_read_only(modes),
        },
        Statement::Set(set) => classify_set(set),
        Statement::Reset(r) => match r.reset {
            Reset::ALL => SessionReset,
            Reset::SessionAuthorization | Reset::ConfigurationParameter(_) => SessionSet,
        },
        Statement::Discard { .. } => SessionReset,
        // `AND CHAIN` immediately opens a new transaction on the same backend, so it must not look
        // like the end of one; Write keeps it on the primary.
        Statement::Commit {
            chain: false,
            modifier: None,
            ..
        }
        | Statement::Rollback {
            chain: false,
            savepoint: None,
        } => EndTransaction,
        Statement::Rollback {
            chain: false,
            savepoint: Some(_),
        }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Neutral,
        Statement::Prepare { .. }
        | Statement::Execute {
            name: Some(_),
            immediate: false,
            ..
        }
        | Statement::Deallocate { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. } => PinToPrimary,
        Statement::CreateTable(t) if t.temporary || in_temp_schema(&t.name) => PinToPrimary,
        Statement::CreateView(v) if v.temporary || in_temp_schema(&v.name) => PinToPrimary,
        Statement::CreateSequence {
            temporary, name, ..
        } if *temporary || in_temp_schema(name) => PinToPrimary,
        // LOAD loads a library into this backend only (e.g. auto_explain with its settings).
        Statement::Load { .. } => PinToPrimary,
        // A function in pg_temp lives (and is callable) only on this backend connection.
        Statement::CreateFunction(f) if in_temp_schema(&f.name) => PinToPrimary,
        Statement::CreateProcedure { name, .. } if in_temp_schema(name) => PinToPrimary,
        _ => Write,
    }
}

fn need_class(need: QueryNeed) -> StatementClass {
    match need {
        QueryNeed::Read => StatementClass::Read,
        QueryNeed::PrimaryRead => StatementClass::PrimaryRead,
        QueryNeed::Write => StatementClass::Write,
    }
}

/// SHOW of a setting whose value differs between a primary and a standby asks about the
/// server's role: the primary's answer is wanted (`SHOW ALL` includes them).
fn show_class(variable: &[Ident]) -> StatementClass {
    let [v] = variable else {
        return StatementClass::Read;
    };
    let name = v.value.to_ascii_lowercase();
    match name.as_str() {
        "transaction_read_only" | "default_transaction_read_only" | "in_hot_standby" | "all" => {
            StatementClass::PrimaryRead
        }
        _ => StatementClass::Read,
    }
}

/// The INTO clause of the outermost SELECT (`SELECT ... INTO [TEMP] t`).
fn top_level_into(q: &Query) -> Option<&SelectInto> {
    match q.body.as_ref() {
        SetExpr::Select(s) => s.into.as_ref(),
        _ => None,
    }
}

/// `pg_temp.x` (or a backend's own `pg_temp_N.x`) names a temporary object even without TEMP.
fn in_temp_schema(name: &ObjectName) -> bool {
    name.0.len() > 1
        && name
            .0
            .first()
            .and_then(ObjectNamePart::as_ident)
            .is_some_and(is_temp_schema)
}

fn into_temp_schema(targets: &[Expr]) -> bool {
    matches!(targets, [Expr::CompoundIdentifier(parts)] if parts.len() > 1 && parts.first().is_some_and(is_temp_schema))
}

fn is_temp_schema(id: &Ident) -> bool {
    id.quote_style.is_none() && id.value.to_ascii_lowercase().starts_with("pg_temp")
}

fn is_read_only(modes: &[TransactionMode]) -> bool {
    let has = |m: TransactionAccessMode| modes.contains(&TransactionMode::AccessMode(m));
    // PostgreSQL rejects conflicting modes; requiring "no READ WRITE" keeps such input on the primary.
    has(TransactionAccessMode::ReadOnly) && !has(TransactionAccessMode::ReadWrite)
}

fn classify_declare(stmts: &[Declare], policy: &FunctionPolicy) -> StatementClass {
    // PostgreSQL's DECLARE names exactly one cursor; anything else is another dialect's syntax.
    let [d] = stmts else {
        return StatementClass::Write;
    };
    match (&d.declare_type, &d.for_query) {
        // A holdable cursor outlives the transaction on that one backend connection.
        (Some(DeclareType::Cursor), Some(_)) if d.hold == Some(true) => {
            StatementClass::PinToPrimary
        }
        (Some(DeclareType::Cursor), Some(q)) => need_class(query_need(q, policy)),
        _ => StatementClass::Write,
    }
}

fn classify_set(set: &Set) -> StatementClass {
    use StatementClass::*;
    let scoped = |m: Option<&ContextModifier>| match m {
        None | Some(ContextModifier::Session) => SessionSet,
        // SET LOCAL dies with the transaction, which is routed as a whole anyway.
        Some(ContextModifier::Local) => Neutral,
        Some(ContextModifier::Global) => Write,
    };
    match set {
        Set::SingleAssignment {
            scope,
            hivevar: false,
            ..
        } => scoped(scope.as_ref()),
        Set::SetRole {
            context_modifier, ..
        } => scoped(context_modifier.as_ref()),
        Set::SetSessionAuthorization(p) => scoped(Some(&p.scope)),
        Set::SetTimeZone { local: true, .. } => Neutral,
        Set::SetTimeZone { local: false, .. } | Set::SetNames { .. } => SessionSet,
        // SET SESSION CHARACTERISTICS AS TRANSACTION changes the session default.
        Set::SetTransaction { session: true, .. } => SessionSet,
        // SET TRANSACTION SNAPSHOT binds the transaction to the server that exported the snapshot.
        Set::SetTransaction {
            modes, snapshot, ..
        } => SetTransaction {
            read_only: snapshot.is_none() && is_read_only(modes),
        },
        _ => Write,
    }
}

/// The class of a string sqlparser rejects: always the primary, and pinned there when it may
/// create session state — a `DO` block (it can create temporary objects or set parameters),
/// a statement starting like SET/PREPARE/DECLARE/LISTEN/LOAD, or any mention of temporary
/// objects, `set_config` or `setseed`. Without the pin, a later read could go to a replica
/// that lacks the state.
fn unparsed_class(sql: &str) -> StatementClass {
    const STARTS: &[&str] = &[
        "do",
        "set",
        "reset",
        "prepare",
        "execute",
        "deallocate",
        "declare",
        "listen",
        "unlisten",
        "load",
        "discard",
    ];
    const ANYWHERE: &[&str] = &["temp", "temporary", "set_config", "setseed"];
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        // Not even tokens (an unterminated quote): PostgreSQL rejects it too.
        return StatementClass::Write;
    };
    let sig: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let mut at_start = true;
    for (i, t) in sig.iter().enumerate() {
        match t {
            Token::SemiColon => {
                at_start = true;
                continue;
            }
            Token::Word(w) => {
                let v = w.value.to_ascii_lowercase();
                // PREPARE TRANSACTION ends the transaction; it creates no session state.
                let prepare_transaction = v == "prepare"
                    && matches!(sig.get(i + 1), Some(Token::Word(n)) if n.keyword == Keyword::TRANSACTION);
                if (at_start && STARTS.contains(&v.as_str()) && !prepare_transaction)
                    || ANYWHERE.contains(&v.as_str())
                    || v.starts_with("pg_temp")
                {
                    return StatementClass::PinToPrimary;
                }
            }
            _ => {}
        }
        at_start = false;
    }
    StatementClass::Write
}

/// Whether `sql` may create, change or drop functions (so the database's function catalog
/// must be reloaded): a statement starting with CREATE / ALTER / DROP that mentions FUNCTION,
/// PROCEDURE, ROUTINE, AGGREGATE, EXTENSION or SCHEMA, or a `DO` block (which can run any of
/// these). Token-based so that statements sqlparser rejects count too; a false positive only
/// costs a reload.
pub fn may_change_functions(sql: &str) -> bool {
    const OBJECTS: &[&str] = &[
        "function",
        "procedure",
        "routine",
        "aggregate",
        "extension",
        "schema",
    ];
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return false;
    };
    let (mut at_start, mut ddl) = (true, false);
    for t in &tokens {
        match t {
            Token::Whitespace(_) => continue,
            Token::SemiColon => {
                (at_start, ddl) = (true, false);
                continue;
            }
            Token::Word(w) if w.quote_style.is_none() => {
                let v = w.value.to_ascii_lowercase();
                if at_start && v == "do" {
                    return true;
                }
                if at_start {
                    ddl = matches!(v.as_str(), "create" | "alter" | "drop");
                } else if ddl && OBJECTS.contains(&v.as_str()) {
                    return true;
                }
            }
            _ => {}
        }
        at_start = false;
    }
    false
}

/// Handles valid PostgreSQL that sqlparser 0.63 rejects and that would otherwise be misrouted as a
/// write: `MOVE ...` (a cursor read) and `[NOT] DEFERRABLE` in BEGIN / SET TRANSACTION modes.
/// Only whole single-statement strings qualify; everything else stays unparsed (`None`).
fn unparsed_fallback(sql: &str) -> Option<Vec<StatementClass>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut sig: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    if matches!(sig.last(), Some(Token::SemiColon)) {
        sig.pop();
    }
    let (Token::Word(first), rest) = sig.split_first()? else {
        return None;
    };
    if first.quote_style.is_none() && first.value.eq_ignore_ascii_case("move") {
        // MOVE [direction] [FROM | IN] cursor: only words and (signed) counts, so no expression and
        // no function call can hide in it.
        let plain = |t: &&Token| matches!(t, Token::Word(_) | Token::Number(..) | Token::Minus);
        return (!rest.is_empty() && rest.iter().all(plain)).then(|| vec![StatementClass::Read]);
    }
    if !matches!(
        first.keyword,
        Keyword::BEGIN | Keyword::START | Keyword::SET
    ) {
        return None;
    }
    let is_word = |t: &Token, k: Keyword| matches!(t, Token::Word(w) if w.keyword == k && w.quote_style.is_none());
    let mut kept: Vec<&Token> = vec![sig.first().copied()?];
    let (mut removed, mut drop_next_comma) = (false, false);
    for &t in rest {
        if is_word(t, Keyword::DEFERRABLE) {
            removed = true;
            if kept.last().is_some_and(|p| is_word(p, Keyword::NOT)) {
                kept.pop();
            }
            // Drop the list separator on one side of the removed mode.
            drop_next_comma = !matches!(kept.last(), Some(Token::Comma));
            if !drop_next_comma {
                kept.pop();
            }
        } else if drop_next_comma && matches!(t, Token::Comma) {
            drop_next_comma = false;
        } else {
            drop_next_comma = false;
            kept.push(t);
        }
    }
    if !removed {
        return None;
    }
    let rewritten = kept
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, &rewritten).ok()?;
    // Accept only a transaction statement: the rewrite must not turn anything else into a read.
    match statements.as_slice() {
        [s @ (Statement::StartTransaction { .. } | Statement::Set(Set::SetTransaction { .. }))] => {
            Some(vec![classify_statement(s, &FunctionPolicy::default())])
        }
        _ => None,
    }
}

/// The cache key of a statement with its numeric and plain string literals replaced by `?`,
/// or `None` when the text has anything this small lexer does not fully understand (comments,
/// dollar quoting or parameters, E'' strings, backslashes in strings, unterminated quotes):
/// those are keyed by their exact text. Sound because no classification rule looks at a
/// literal's value: routing depends on statement kinds, keywords, identifiers and function
/// names only — except the arguments of `current_setting` and `set_config`, so texts that
/// mention those are keyed exactly. The key starts with a NUL byte, which no SQL text from the wire contains, so it
/// never collides with an exact-text key.
pub fn literal_free_key(sql: &str) -> Option<String> {
    let mut out = String::new();
    literal_free_key_into(sql, &mut out).map(|()| out)
}

/// [`literal_free_key`] into `out` (cleared first), `None` where there is no such key: lets
/// the cache look up with a reused buffer instead of a new String per statement.
fn literal_free_key_into(sql: &str, out: &mut String) -> Option<()> {
    let b = sql.as_bytes();
    out.clear();
    out.reserve(sql.len() + 1);
    out.push('\0');
    let mut i = 0;
    let mut copied = 0;
    let mut replaced = false;
    while let Some(&c) = b.get(i) {
        let class = BYTE_CLASS[usize::from(c)];
        if class & PLAIN != 0 {
            // Blanks, operators, punctuation: most of a statement's non-word bytes.
            i += 1;
            continue;
        }
        if class & IDENT != 0 && !c.is_ascii_digit() {
            // A word, skipped whole, so digits inside identifiers (t1, x2y) stay. `$` starts
            // no word here: a dollar quote or a parameter leaves the text unkeyed below.
            if c == b'$' {
                return None;
            }
            let start = i;
            i += b[i..]
                .iter()
                .position(|d| !is(*d, IDENT))
                .unwrap_or(b.len() - i);
            // The only calls whose class depends on a literal argument.
            let word = &b[start..i];
            if word.eq_ignore_ascii_case(b"current_setting")
                || word.eq_ignore_ascii_case(b"set_config")
            {
                return None;
            }
            continue;
        }
        match c {
            b'\'' => {
                // E'...' / U&'...' / B'...' / X'...' prefixes change how the body is read.
                if i > 0 && b.get(i - 1).is_some_and(|p| is(*p, IDENT) || *p == b'&') {
                    return None;
                }
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None | Some(b'\\') => return None,
                        Some(b'\'') if b.get(j + 1) == Some(&b'\'') => j += 2,
                        Some(b'\'') => break,
                        Some(_) => j += 1,
                    }
                }
                out.push_str(sql.get(copied..i)?);
                out.push('?');
                i = j + 1;
                copied = i;
                replaced = true;
            }
            b'"' => {
                // Quoted identifier: copied as is ("" is an escaped quote inside).
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return None,
                        Some(b'"') if b.get(j + 1) == Some(&b'"') => j += 2,
                        Some(b'"') => break,
                        Some(_) => j += 1,
                    }
                }
                i = j + 1;
            }
            b'$' | b'\\' => return None,
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            b'0'..=b'9' if i == 0 || b.get(i - 1).is_some_and(|p| !is(*p, IDENT) && *p != b'.') => {
                let mut j = i;
                while b.get(j).is_some_and(|d| is(*d, NUMBER)) {
                    j += 1;
                }
                out.push_str(sql.get(copied..i)?);
                out.push('?');
                i = j;
                copied = i;
                replaced = true;
            }
            // A digit inside a word (the word arm above takes words whole) or after `.`.
            _ => i += 1,
        }
    }
    if !replaced {
        return None;
    }
    out.push_str(sql.get(copied..)?);
    Some(())
}

/// [`literal_free_key`]'s byte classes, looked up instead of tested (it runs for every simple
/// Query): a byte of an identifier (ASCII letters and digits, `_`, `$`, and every byte of a
/// multi-byte UTF-8 character), and a byte that continues a number (`1.5e3`, `1_000`).
const IDENT: u8 = 1;
const NUMBER: u8 = 2;
/// Neither part of a word or number nor a byte that starts a literal, a quoted identifier or a
/// comment (`'`, `"`, `\`, `-`, `/`): passed over without a look.
const PLAIN: u8 = 4;
static BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let alphanumeric = c.is_ascii_alphanumeric();
        if alphanumeric || c == b'_' || c == b'$' || c >= 0x80 {
            table[i] |= IDENT;
        }
        if alphanumeric || c == b'.' || c == b'_' {
            table[i] |= NUMBER;
        }
        if table[i] & IDENT == 0 && !matches!(c, b'\'' | b'"' | b'\\' | b'-' | b'/') {
            table[i] |= PLAIN;
        }
        i += 1;
    }
    table
};

fn is(c: u8, class: u8) -> bool {
    BYTE_CLASS[usize::from(c)] & class != 0
}

thread_local! {
    /// [`ClassifyCache::classify`]'s key buffer, reused from statement to statement.
    static KEY_BUFFER: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The key buffer's room is kept up to this; a longer key's is given back at the next lookup.
const KEY_BUFFER_KEPT: usize = 16 * 1024;

/// Longest SQL text kept in the cache; longer texts are classified on every call.
const MAX_CACHED_SQL_LEN: usize = 64 * 1024;

/// A bounded, thread-safe cache of [`classify`] results keyed by SQL text, so repeated statements
/// are not re-parsed.
///
/// Eviction: when full, one arbitrary entry (the first in hash order) is dropped per insert. That is
/// O(1), needs no bookkeeping, and keeps most of a hot working set, unlike clearing everything.
#[derive(Debug)]
pub struct ClassifyCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
    /// Set when a statement that may change functions went through (see
    /// [`may_change_functions`]); taken by the function refresher.
    functions_changed: AtomicBool,
    /// Woken when `functions_changed` is set.
    on_functions_changed: Option<Arc<Notify>>,
}

#[derive(Debug)]
struct CacheInner {
    policy: Arc<FunctionPolicy>,
    /// Bumped by `set_policy`, so a result computed under an older policy is not stored.
    generation: u64,
    map: HashMap<String, Arc<[StatementClass]>, foldhash::fast::RandomState>,
    hits: u64,
    misses: u64,
}

impl ClassifyCache {
    /// A cache holding at most `capacity` SQL texts (0 disables caching), starting with the default
    /// (not loaded) policy.
    pub fn new(capacity: usize) -> Self {
        Self::with_notify(capacity, None)
    }

    /// Like [`ClassifyCache::new`], waking `notify` whenever a statement may have changed the
    /// database's functions.
    pub fn with_notify(capacity: usize, notify: Option<Arc<Notify>>) -> Self {
        Self {
            capacity,
            functions_changed: AtomicBool::new(false),
            on_functions_changed: notify,
            inner: Mutex::new(CacheInner {
                policy: Arc::new(FunctionPolicy::default()),
                generation: 0,
                map: HashMap::default(),
                hits: 0,
                misses: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CacheInner> {
        // The guarded data stays consistent even if a holder panicked, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the cached classes, classifying (outside the lock) on a miss.
    ///
    /// Statements that differ only in their literal values share one entry (see
    /// [`literal_free_key`]): `SELECT ... WHERE aid = 42` and `... = 43` are parsed once.
    pub fn classify(&self, sql: &str) -> Arc<[StatementClass]> {
        // The key is built in this thread's buffer: a hit, the common case, allocates nothing.
        let looked_up = KEY_BUFFER.with_borrow_mut(|buf| {
            if buf.capacity() > KEY_BUFFER_KEPT {
                // A huge statement went through: do not keep its room for the thread's life.
                *buf = String::new();
            }
            let key = match literal_free_key_into(sql, buf) {
                Some(()) => buf.as_str(),
                None => sql,
            };
            let mut inner = self.lock();
            if let Some(hit) = inner.map.get(key).cloned() {
                inner.hits += 1;
                return Ok(hit);
            }
            inner.misses += 1;
            Err((Arc::clone(&inner.policy), inner.generation, key.to_owned()))
        });
        let (policy, generation, key) = match looked_up {
            Ok(hit) => return hit,
            Err(miss) => miss,
        };
        let classes: Arc<[StatementClass]> = classify(sql, &policy).into();
        let writes = classes
            .iter()
            .any(|c| matches!(c, StatementClass::Write | StatementClass::PinToPrimary));
        if writes && may_change_functions(sql) {
            // A function may now write that the loaded set says does not (CREATE OR REPLACE,
            // ALTER FUNCTION ... VOLATILE): forget the set, so that every call counts as a
            // write until the refresher has reloaded it. Not cached, so that every repetition
            // does this again.
            self.forget_functions();
            return classes;
        }
        if self.capacity > 0 && key.len() <= MAX_CACHED_SQL_LEN {
            let mut inner = self.lock();
            if inner.generation == generation {
                if inner.map.len() >= self.capacity && !inner.map.contains_key(key.as_str()) {
                    if let Some(victim) = inner.map.keys().next().cloned() {
                        inner.map.remove(&victim);
                    }
                }
                inner.map.insert(key, Arc::clone(&classes));
            }
        }
        classes
    }

    /// Replaces the policy and clears the cache (its entries were computed under the old policy).
    pub fn set_policy(&self, policy: FunctionPolicy) {
        let mut inner = self.lock();
        inner.policy = Arc::new(policy);
        inner.generation = inner.generation.wrapping_add(1);
        inner.map.clear();
    }

    /// Forgets the function set (every call counts as a write) and tells the refresher.
    pub fn forget_functions(&self) {
        {
            let mut inner = self.lock();
            inner.policy = Arc::new(inner.policy.unloaded());
            inner.generation = inner.generation.wrapping_add(1);
            inner.map.clear();
        }
        self.functions_changed.store(true, Ordering::SeqCst);
        if let Some(n) = &self.on_functions_changed {
            n.notify_one();
        }
    }

    /// Whether functions may have changed since the last call (and clears the flag).
    pub fn take_functions_changed(&self) -> bool {
        self.functions_changed.swap(false, Ordering::SeqCst)
    }

    /// Whether the current policy knows the volatile function set.
    pub fn policy_loaded(&self) -> bool {
        self.lock().policy.is_loaded()
    }

    /// Number of cached SQL texts.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.lock().map.is_empty()
    }

    /// (hits, misses) since creation.
    pub fn stats(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.hits, inner.misses)
    }
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "classify_tests_functions.rs"]
mod tests_functions;
