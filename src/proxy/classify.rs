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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sqlparser::ast::{
    ContextModifier, CopySource, CopyTarget, Declare, DeclareType, DescribeAlias, Expr,
    FunctionArguments, Ident, ObjectName, ObjectNamePart, Query, Reset, Select, SelectInto, Set,
    SetExpr, Statement, TableFactor, TransactionAccessMode, TransactionMode, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// What one SQL statement means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementClass {
    /// Provably only reads: SELECT / VALUES / SHOW, EXPLAIN (without ANALYZE, or ANALYZE of a read),
    /// COPY (query|table) TO STDOUT of a read, DECLARE cursor (no WITH HOLD) for a read,
    /// FETCH / MOVE / CLOSE — and calling no function that may write (see [`FunctionPolicy`]).
    Read,
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
    /// SELECT INTO TEMP, LISTEN, UNLISTEN, DECLARE ... WITH HOLD.
    PinToPrimary,
}

/// Which functions may write.
///
/// Names are compared exactly as given, against the call's last identifier part, lower-cased unless
/// quoted (`public.NextVal(...)` -> `"nextval"`, `"MyFn"(...)` -> `"MyFn"`), so pass the names as
/// PostgreSQL stores them in `pg_proc.proname`. The default policy is "not loaded": every call may write.
#[derive(Debug, Clone, Default)]
pub struct FunctionPolicy {
    volatile: Option<HashSet<String>>,
    read_overrides: HashSet<String>,
    write_overrides: HashSet<String>,
}

impl FunctionPolicy {
    /// `volatile`: names of VOLATILE functions read from the primary's `pg_proc`, or `None` while not
    /// yet known — then every function call counts as possibly writing, except the read overrides.
    /// `read_overrides`: functions that never count as writing. `write_overrides`: always count as writing.
    pub fn new(
        volatile: Option<HashSet<String>>,
        read_overrides: impl IntoIterator<Item = String>,
        write_overrides: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            volatile,
            read_overrides: read_overrides.into_iter().collect(),
            write_overrides: write_overrides.into_iter().collect(),
        }
    }

    /// Whether a call of `name` may write: write overrides win over read overrides, which win over
    /// the volatile set (an unknown set means "yes").
    pub fn may_write(&self, name: &str) -> bool {
        if self.write_overrides.contains(name) {
            return true;
        }
        if self.read_overrides.contains(name) {
            return false;
        }
        match &self.volatile {
            Some(volatile) => volatile.contains(name),
            None => true,
        }
    }

    /// Whether the volatile function set is known.
    pub fn is_loaded(&self) -> bool {
        self.volatile.is_some()
    }
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
        Err(_) => unparsed_fallback(sql).unwrap_or_else(|| vec![StatementClass::Write]),
    })
    .unwrap_or_else(|_| vec![StatementClass::Write])
}

/// Classify one parsed statement. The final `_` arm is what makes new or unhandled statement kinds
/// (including other dialects' syntax the PostgreSQL parser accepts) fall into `Write`.
fn classify_statement(stmt: &Statement, policy: &FunctionPolicy) -> StatementClass {
    use StatementClass::*;
    match stmt {
        Statement::Query(q) => match top_level_into(q) {
            Some(into) if into.temporary || into_temp_schema(&into.targets) => PinToPrimary,
            Some(_) => Write,
            None => read_if(query_is_read(q, policy)),
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
                Write if !analyzing => Read,
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
            CopySource::Query(q) => read_if(query_is_read(q, policy)),
        },
        Statement::Declare { stmts } => classify_declare(stmts, policy),
        Statement::Fetch { into: None, .. } | Statement::Close { .. } => Read,
        Statement::ShowVariable { .. } => Read,
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
        _ => Write,
    }
}

fn read_if(is_read: bool) -> StatementClass {
    if is_read {
        StatementClass::Read
    } else {
        StatementClass::Write
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
        (Some(DeclareType::Cursor), Some(q)) => read_if(query_is_read(q, policy)),
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

/// True when the query provably only reads (no locks, no DML anywhere, no writing function).
fn query_is_read(q: &Query, policy: &FunctionPolicy) -> bool {
    q.visit(&mut ReadCheck { policy }).is_continue()
}

/// Walks a query tree and breaks at the first thing that may write.
struct ReadCheck<'a> {
    policy: &'a FunctionPolicy,
}

impl ReadCheck<'_> {
    fn check_name(&self, name: &str) -> ControlFlow<()> {
        if self.policy.may_write(name) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn check_call(&self, name: &ObjectName) -> ControlFlow<()> {
        match function_name(name) {
            Some(n) => self.check_name(&n),
            // A computed name (another dialect's IDENTIFIER(...)) cannot be judged.
            None => ControlFlow::Break(()),
        }
    }
}

impl Visitor for ReadCheck<'_> {
    type Break = ();

    // Only queries are visited, so any nested statement is DML inside a query, e.g. a
    // data-modifying CTE `WITH x AS (INSERT ... RETURNING *) SELECT ...`.
    fn pre_visit_statement(&mut self, _: &Statement) -> ControlFlow<()> {
        ControlFlow::Break(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let dml_body = matches!(
            q.body.as_ref(),
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
        );
        // Locking clauses need a writable transaction; the other clauses belong to other dialects
        // and are rejected rather than understood.
        if dml_body
            || !q.locks.is_empty()
            || q.for_clause.is_some()
            || q.settings.is_some()
            || q.format_clause.is_some()
            || !q.pipe_operators.is_empty()
        {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        // SELECT INTO creates a table, wherever it is nested.
        if s.into.is_some() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        match tf {
            // `FROM generate_series(1, 3)` parses as a table with arguments.
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.check_call(name),
            TableFactor::UNNEST { .. } => self.check_name("unnest"),
            // Arguments and sub-queries of these are visited on their own.
            TableFactor::Table { .. }
            | TableFactor::Derived { .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::JsonTable { .. } => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Function(f) if is_sql_value_function(f) => ControlFlow::Continue(()),
            Expr::Function(f) => self.check_call(&f.name),
            Expr::Convert { .. } => self.check_name("convert"),
            // Keyword syntaxes such as EXTRACT, SUBSTRING or TRIM map to immutable built-ins.
            _ => ControlFlow::Continue(()),
        }
    }
}

/// `CURRENT_USER`, `CURRENT_TIMESTAMP`, ...: SQL keywords that parse as parenthesis-less calls but
/// are built-in and never write, so they need not wait for the volatile set.
fn is_sql_value_function(f: &sqlparser::ast::Function) -> bool {
    const NAMES: &[&str] = &[
        "current_catalog",
        "current_date",
        "current_role",
        "current_schema",
        "current_time",
        "current_timestamp",
        "current_user",
        "localtime",
        "localtimestamp",
        "session_user",
        "system_user",
        "user",
    ];
    matches!(f.args, FunctionArguments::None)
        && f.name.0.len() == 1
        && function_name(&f.name).is_some_and(|n| NAMES.contains(&n.as_str()))
}

/// The call's last identifier part, case-folded the way PostgreSQL folds unquoted identifiers.
fn function_name(name: &ObjectName) -> Option<String> {
    let id = name.0.last()?.as_ident()?;
    Some(match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_ascii_lowercase(),
    })
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
/// names only. The key starts with a NUL byte, which no SQL text from the wire contains, so it
/// never collides with an exact-text key.
pub fn literal_free_key(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 1);
    out.push('\0');
    let mut i = 0;
    let mut copied = 0;
    let mut replaced = false;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    while let Some(&c) = b.get(i) {
        match c {
            b'\'' => {
                // E'...' / U&'...' / B'...' / X'...' prefixes change how the body is read.
                if i > 0 && b.get(i - 1).is_some_and(|p| ident(*p) || *p == b'&') {
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
            b'0'..=b'9' if i == 0 || b.get(i - 1).is_some_and(|p| !ident(*p) && *p != b'.') => {
                let mut j = i;
                while b
                    .get(j)
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == b'.' || *d == b'_')
                {
                    j += 1;
                }
                out.push_str(sql.get(copied..i)?);
                out.push('?');
                i = j;
                copied = i;
                replaced = true;
            }
            _ if ident(c) => {
                // Skip the whole word, so digits inside identifiers (t1, x2y) stay.
                while b.get(i).is_some_and(|d| ident(*d)) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    if !replaced {
        return None;
    }
    out.push_str(sql.get(copied..)?);
    Some(out)
}

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
}

#[derive(Debug)]
struct CacheInner {
    policy: Arc<FunctionPolicy>,
    /// Bumped by `set_policy`, so a result computed under an older policy is not stored.
    generation: u64,
    map: HashMap<String, Arc<[StatementClass]>>,
    hits: u64,
    misses: u64,
}

impl ClassifyCache {
    /// A cache holding at most `capacity` SQL texts (0 disables caching), starting with the default
    /// (not loaded) policy.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(CacheInner {
                policy: Arc::new(FunctionPolicy::default()),
                generation: 0,
                map: HashMap::new(),
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
        let key: Cow<'_, str> = match literal_free_key(sql) {
            Some(k) => Cow::Owned(k),
            None => Cow::Borrowed(sql),
        };
        let (policy, generation) = {
            let mut inner = self.lock();
            if let Some(hit) = inner.map.get(key.as_ref()).cloned() {
                inner.hits += 1;
                return hit;
            }
            inner.misses += 1;
            (Arc::clone(&inner.policy), inner.generation)
        };
        let classes: Arc<[StatementClass]> = classify(sql, &policy).into();
        if self.capacity > 0 && key.len() <= MAX_CACHED_SQL_LEN {
            let mut inner = self.lock();
            if inner.generation == generation {
                if inner.map.len() >= self.capacity && !inner.map.contains_key(key.as_ref()) {
                    if let Some(victim) = inner.map.keys().next().cloned() {
                        inner.map.remove(&victim);
                    }
                }
                inner.map.insert(key.into_owned(), Arc::clone(&classes));
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
