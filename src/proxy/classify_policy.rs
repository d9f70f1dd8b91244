//! The function side of classification: which functions may write ([`FunctionPolicy`]), the
//! query walker that finds every call ([`ReadCheck`]), and the scan for calls that create
//! session state ([`pins_session`]).
//!
//! A call may hide in more places than `f(...)`: PostgreSQL's attribute notation `t.f` and
//! `(t).f` means `f(t)`, and keyword syntaxes (`TRIM(...)`, `SUBSTRING(...)`, `x AT TIME ZONE
//! z`, ...) are calls of ordinary, user-overloadable functions (`btrim`, `substring`,
//! `timezone`, ...). All of them are checked by name.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    AccessExpr, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    ObjectName, Query, Select, SetExpr, Statement, TableFactor, TrimWhereField, Value, Visit,
    Visitor,
};

/// What the primary's `pg_proc` says about every function of one name (all overloads, all
/// schemas together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Some function of that name is VOLATILE.
    pub may_write: bool,
    /// Every function of that name is in `pg_catalog`: the built-in one, so the configured
    /// overrides (which describe built-ins) apply to it.
    pub only_pg_catalog: bool,
}

/// Which functions may write.
///
/// Names are compared exactly as given, against the call's last identifier part, lower-cased unless
/// quoted (`public.NextVal(...)` -> `"nextval"`, `"MyFn"(...)` -> `"MyFn"`), so pass the names as
/// PostgreSQL stores them in `pg_proc.proname`. The default policy is "not loaded": every call may
/// write.
#[derive(Debug, Clone, Default)]
pub struct FunctionPolicy {
    known: Option<HashMap<String, FunctionInfo>>,
    read_overrides: HashSet<String>,
    write_overrides: HashSet<String>,
}

impl FunctionPolicy {
    /// `known`: every function name in the primary's `pg_proc`, or `None` while not yet loaded
    /// (then every call counts as possibly writing). A name missing from a loaded map counts as
    /// writing too: it was created after the load, and may be anything.
    /// `read_overrides`: built-in functions that never count as writing — applied only to the
    /// `pg_catalog` function of that name (see [`FunctionInfo::only_pg_catalog`]), because a
    /// same-named user function in another schema (or an overload) may write.
    /// `write_overrides`: always count as writing, whatever schema.
    pub fn new(
        known: Option<HashMap<String, FunctionInfo>>,
        read_overrides: impl IntoIterator<Item = String>,
        write_overrides: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            known,
            read_overrides: read_overrides.into_iter().collect(),
            write_overrides: write_overrides.into_iter().collect(),
        }
    }

    /// Whether a call of `name`, schema-qualified with `schema` (lower-cased) if given, may write:
    /// write overrides win; read overrides apply to the built-in only (an explicit
    /// `pg_catalog.` call, or a name that exists in `pg_catalog` only); then the loaded
    /// volatility; unknown names and an unloaded policy mean "yes".
    pub fn may_write(&self, schema: Option<&str>, name: &str) -> bool {
        if self.write_overrides.contains(name) {
            return true;
        }
        let info = self.known.as_ref().map(|k| k.get(name));
        if self.read_overrides.contains(name) {
            let builtin = match schema {
                Some(s) => s == "pg_catalog",
                None => matches!(info, Some(Some(i)) if i.only_pg_catalog),
            };
            if builtin {
                return false;
            }
        }
        match info {
            Some(Some(i)) => i.may_write,
            _ => true,
        }
    }

    /// Whether `x.name` / `(x).name` may be a writing call `name(x)`: only when `name` is a
    /// known function that may write (most such names are columns), or always while the
    /// functions are not loaded.
    pub fn attribute_may_write(&self, name: &str) -> bool {
        if self.write_overrides.contains(name) {
            return true;
        }
        match &self.known {
            None => true,
            Some(k) => k.get(name).is_some_and(|i| {
                i.may_write && !(i.only_pg_catalog && self.read_overrides.contains(name))
            }),
        }
    }

    /// Whether the function set is known.
    pub fn is_loaded(&self) -> bool {
        self.known.is_some()
    }

    #[cfg(test)]
    pub fn known_for_tests(&self) -> Option<HashMap<String, FunctionInfo>> {
        self.known.clone()
    }

    /// The same overrides, with the function set forgotten (until the next load).
    pub fn unloaded(&self) -> Self {
        Self {
            known: None,
            ..self.clone()
        }
    }
}

/// What a query needs, from weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueryNeed {
    /// May run on a replica.
    Read,
    /// Only reads, but asks about the server's role or state: the primary's answer is wanted.
    PrimaryRead,
    /// May write.
    Write,
}

/// What running `q` needs (no locks, no DML anywhere, no writing function = at most a read).
pub fn query_need(q: &Query, policy: &FunctionPolicy) -> QueryNeed {
    let mut check = ReadCheck {
        policy,
        primary_read: false,
    };
    if q.visit(&mut check).is_break() {
        QueryNeed::Write
    } else if check.primary_read {
        QueryNeed::PrimaryRead
    } else {
        QueryNeed::Read
    }
}

/// Walks a query tree and breaks at the first thing that may write.
struct ReadCheck<'a> {
    policy: &'a FunctionPolicy,
    /// Seen a call or relation whose answer differs between primary and standby.
    primary_read: bool,
}

impl ReadCheck<'_> {
    fn check_name(&mut self, schema: Option<&str>, name: &str) -> ControlFlow<()> {
        if is_server_state_function(name) {
            self.primary_read = true;
        }
        if self.policy.may_write(schema, name) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn check_call(&mut self, name: &ObjectName) -> ControlFlow<()> {
        // A computed name (another dialect's IDENTIFIER(...)) cannot be judged.
        let (Some((schema, _)), Some(last)) = (
            function_name(name),
            name.0.last().and_then(|p| p.as_ident()),
        ) else {
            return ControlFlow::Break(());
        };
        let Some(names) = ident_names(last) else {
            return ControlFlow::Break(());
        };
        for n in names {
            self.check_name(schema.as_deref(), &n)?;
        }
        ControlFlow::Continue(())
    }

    /// The last part of `a.b` or `(a).b` may be a function called with `a` as its argument.
    fn check_attribute(&self, id: &Ident) -> ControlFlow<()> {
        match ident_names(id) {
            Some(names) if !names.iter().any(|n| self.policy.attribute_may_write(n)) => {
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Break(()),
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
            TableFactor::Table { name, .. } => {
                if function_name(name).is_some_and(|(s, n)| is_server_state_relation(s, &n)) {
                    self.primary_read = true;
                }
                ControlFlow::Continue(())
            }
            TableFactor::UNNEST { .. } => self.check_name(None, "unnest"),
            // Arguments and sub-queries of these are visited on their own.
            TableFactor::Derived { .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::JsonTable { .. } => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Function(f) if is_sql_value_function(f) => ControlFlow::Continue(()),
            Expr::Function(f) if is_syntax_function(f) => ControlFlow::Continue(()),
            Expr::Function(f) => {
                if function_name(&f.name).is_some_and(|(_, n)| n == "current_setting")
                    && !setting_is_local(f)
                {
                    self.primary_read = true;
                }
                self.check_call(&f.name)
            }
            Expr::CompoundIdentifier(parts) if parts.len() > 1 => match parts.last() {
                Some(last) => self.check_attribute(last),
                None => ControlFlow::Continue(()),
            },
            Expr::CompoundFieldAccess { access_chain, .. } => {
                for a in access_chain {
                    if let AccessExpr::Dot(Expr::Identifier(id)) = a {
                        self.check_attribute(id)?;
                    }
                }
                ControlFlow::Continue(())
            }
            // `x.U&"f\0061"` parses as `x.U & "f\0061"`: judge the escaped name as an attribute.
            Expr::BinaryOp {
                op: BinaryOperator::BitwiseAnd,
                right,
                ..
            } => match right.as_ref() {
                Expr::Identifier(id) if id.quote_style.is_some() && id.value.contains('\\') => {
                    self.check_attribute(id)
                }
                _ => ControlFlow::Continue(()),
            },
            // Keyword syntaxes that PostgreSQL turns into calls of ordinary functions.
            Expr::Convert { .. } => self.check_name(None, "convert"),
            Expr::Ceil { .. } => self.check_name(None, "ceil"),
            Expr::Floor { .. } => self.check_name(None, "floor"),
            Expr::Position { .. } => self.check_name(None, "position"),
            Expr::Substring { .. } => self.check_name(None, "substring"),
            Expr::Overlay { .. } => self.check_name(None, "overlay"),
            Expr::Extract { .. } => self.check_name(None, "extract"),
            Expr::AtTimeZone { .. } => self.check_name(None, "timezone"),
            Expr::IsNormalized { .. } => self.check_name(None, "is_normalized"),
            Expr::Trim { trim_where, .. } => match trim_where {
                Some(TrimWhereField::Leading) => self.check_name(None, "ltrim"),
                Some(TrimWhereField::Trailing) => self.check_name(None, "rtrim"),
                _ => self.check_name(None, "btrim"),
            },
            _ => ControlFlow::Continue(()),
        }
    }
}

/// `current_setting('x')` asks the server for a setting; only the ones that differ between a
/// primary and a standby (and a non-literal name, which could be one) need the primary.
fn setting_is_local(f: &sqlparser::ast::Function) -> bool {
    const STANDBY_DIFFERS: &[&str] = &[
        "transaction_read_only",
        "default_transaction_read_only",
        "in_hot_standby",
    ];
    match literal_args(f).first() {
        Some(Some(name)) => !STANDBY_DIFFERS.contains(&name.to_ascii_lowercase().as_str()),
        _ => false,
    }
}

/// The call's positional arguments that are plain string or boolean literals (as text), `None`
/// for anything else.
fn literal_args(f: &sqlparser::ast::Function) -> Vec<Option<String>> {
    let FunctionArguments::List(list) = &f.args else {
        return Vec::new();
    };
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                Value::Boolean(b) => Some(b.to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Functions whose answer differs between the primary and a standby, so an `auto` listener
/// must ask the primary: recovery state, WAL positions, and the activity statistics.
fn is_server_state_function(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "pg_is_in_recovery",
        "pg_is_wal_replay_paused",
        "pg_get_wal_replay_pause_state",
        "pg_blocking_pids",
        "pg_safe_snapshot_blocking_pids",
    ];
    NAMES.contains(&name)
        || name.starts_with("pg_last_wal_")
        || name.starts_with("pg_last_xact_")
        || name.starts_with("pg_stat_get_")
}

/// System views whose content differs between the primary and a standby: the statistics views
/// (`pg_stat_*`, `pg_statio_*`), locks, prepared transactions and replication slots. A user
/// table of that name in another schema is sent to the primary too (it only costs load).
fn is_server_state_relation(schema: Option<String>, name: &str) -> bool {
    if schema.as_deref().is_some_and(|s| s != "pg_catalog") {
        return false;
    }
    name.starts_with("pg_stat")
        || matches!(
            name,
            // pg_settings: transaction_read_only, in_hot_standby and friends differ.
            "pg_locks" | "pg_prepared_xacts" | "pg_replication_slots" | "pg_settings"
        )
}

/// `CURRENT_USER`, `CURRENT_TIMESTAMP`, ...: SQL keywords that parse as parenthesis-less calls but
/// are built-in and never write, so they need not wait for the function set.
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
        && function_name(&f.name).is_some_and(|(_, n)| NAMES.contains(&n.as_str()))
}

/// `COALESCE(...)`, `GREATEST(...)`, ...: SQL constructs that look like calls but are not
/// functions (they are not in `pg_proc`, so a user cannot define them: an unquoted
/// `coalesce(...)` is always the construct).
fn is_syntax_function(f: &sqlparser::ast::Function) -> bool {
    const NAMES: &[&str] = &["coalesce", "greatest", "least", "nullif", "grouping", "row"];
    f.name.0.len() == 1
        && f.name.0[0]
            .as_ident()
            .is_some_and(|id| id.quote_style.is_none())
        && function_name(&f.name).is_some_and(|(_, n)| NAMES.contains(&n.as_str()))
}

/// The call's (schema, name), case-folded the way PostgreSQL folds unquoted identifiers.
pub fn function_name(name: &ObjectName) -> Option<(Option<String>, String)> {
    let id = name.0.last()?.as_ident()?;
    let schema = match name.0.len() {
        1 => None,
        n => Some(fold(name.0.get(n - 2)?.as_ident()?)),
    };
    Some((schema, fold(id)))
}

fn fold(id: &Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_ascii_lowercase(),
    }
}

/// The names an identifier may stand for: as written, and — for a quoted identifier with a
/// backslash — also decoded as a `U&"..."` Unicode escape identifier (sqlparser 0.63 parses
/// `U&"f\0061"` as `U & "f\0061"` and keeps the escapes). `None` when the escapes do not
/// decode: then the name cannot be judged.
pub fn ident_names(id: &Ident) -> Option<Vec<String>> {
    let mut v = vec![fold(id)];
    if id.quote_style.is_some() && id.value.contains('\\') {
        v.push(decode_unicode_escapes(&id.value)?);
    }
    Some(v)
}

/// Decodes PostgreSQL's Unicode escapes (`\XXXX`, `\+XXXXXX`, `\\`) with the default escape
/// character; `None` when malformed.
pub fn decode_unicode_escapes(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let digits = match chars.peek() {
            Some('\\') => {
                chars.next();
                out.push('\\');
                continue;
            }
            Some('+') => {
                chars.next();
                6
            }
            _ => 4,
        };
        let hex: String = (0..digits).filter_map(|_| chars.next()).collect();
        if hex.len() != digits {
            return None;
        }
        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
    }
    Some(out)
}

/// Functions whose effect outlives the transaction, on this one backend connection:
/// `set_config(name, value, is_local)` (session-level, and a custom variable it creates
/// outlives even a transaction-local one), `setseed()` (the session's random sequence), and
/// the session-level advisory locks (the `_xact_` ones end with the transaction).
const SESSION_STATE_FUNCTIONS: &[&str] = &[
    "set_config",
    "setseed",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Whether a statement creates session state through a function call (see
/// [`SESSION_STATE_FUNCTIONS`]) or a nested clause (`SELECT ... INTO TEMP` anywhere in a
/// query).
pub fn pins_session(stmt: &Statement) -> bool {
    stmt.visit(&mut PinScan).is_break()
}

struct PinScan;

impl Visitor for PinScan {
    type Break = ();

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        match &s.into {
            Some(into) if into.temporary || super::into_temp_schema(&into.targets) => {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        match tf {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. }
                if function_name(name)
                    .is_some_and(|(_, n)| SESSION_STATE_FUNCTIONS.contains(&n.as_str())) =>
            {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        let Expr::Function(f) = e else {
            return ControlFlow::Continue(());
        };
        // set_config also with is_local = true: the setting is undone at the end of the
        // transaction, but a custom variable (`x.y`) it created stays defined in the session
        // (current_setting(.., true) then answers '' there and NULL on another connection).
        match function_name(&f.name) {
            Some((_, n)) if SESSION_STATE_FUNCTIONS.contains(&n.as_str()) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}
