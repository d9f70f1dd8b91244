//! SQL `DEALLOCATE` of a protocol-level prepared statement (psycopg 3 deallocates the
//! statements it prepared with Parse this way). pgcast may hold such a statement on either
//! backend connection (it prepares it again wherever a unit uses it), so the SQL statement is
//! handled like a Close: it runs where the session's routing sends it, after the statement is
//! made to exist there, and every other connection that holds it closes it too.

use super::message;
use super::router::Target;
use super::session::{Session, Unit};
use super::slot::{PendingUnit, Slot, StatementInfo};
use super::ProxyError;

/// What a `DEALLOCATE [PREPARE] name | ALL` statement removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocate {
    Name(String),
    All,
}

/// Recognises a single `DEALLOCATE [PREPARE] { name | ALL }` statement. The name is folded to
/// lower case unless quoted, as PostgreSQL does.
pub fn parse(sql: &str) -> Option<Deallocate> {
    let s = sql.trim().trim_end_matches(';').trim_end();
    let rest = strip_keyword(s, "deallocate")?;
    let rest = strip_keyword(rest, "prepare").unwrap_or(rest);
    let rest = rest.trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                    continue;
                }
                return chars
                    .all(char::is_whitespace)
                    .then_some(Deallocate::Name(name));
            }
            name.push(c);
        }
        return None;
    }
    let ident = rest.trim_end();
    let mut chars = ident.chars();
    let first = chars.next()?;
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if !valid {
        return None;
    }
    if ident.eq_ignore_ascii_case("all") {
        return Some(Deallocate::All);
    }
    Some(Deallocate::Name(ident.to_ascii_lowercase()))
}

/// `s` without a leading keyword (case-insensitive) that is followed by white space or its end.
fn strip_keyword<'a>(s: &'a str, keyword: &str) -> Option<&'a str> {
    let s = s.trim_start();
    let head = s.get(..keyword.len())?;
    let rest = &s[keyword.len()..];
    (head.eq_ignore_ascii_case(keyword)
        && (rest.is_empty() || rest.starts_with(char::is_whitespace)))
    .then_some(rest)
}

impl Session {
    /// The DEALLOCATE in this SQL when it concerns protocol-level statements pgcast tracks
    /// (for `ALL`: when there are any); other DEALLOCATEs are routed as they classify.
    pub(super) fn protocol_deallocate(&self, sql: &str) -> Option<Deallocate> {
        // Without protocol-level statements nothing is mapped: no need to parse every query.
        if self.statements.is_empty() {
            return None;
        }
        match parse(sql)? {
            Deallocate::All => Some(Deallocate::All),
            Deallocate::Name(n) if self.statements.contains_key(&n) => Some(Deallocate::Name(n)),
            _ => None,
        }
    }

    /// Before the unit's DEALLOCATE runs on `target`, the statement must exist there.
    pub(super) async fn before_deallocate(
        &mut self,
        target: Target,
        unit: &Unit,
    ) -> Result<(), ProxyError> {
        let Some(Deallocate::Name(name)) = &unit.deallocate else {
            return Ok(());
        };
        let (Some(info), Some(slot)) = (self.statements.get(name), self.slots.get_mut(target))
        else {
            return Ok(());
        };
        prepare_silently(slot, name, info).await
    }

    /// Once sent: the statement is gone from the session, and from the other connection
    /// (closed there before the name is next used, or at once for ALL).
    pub(super) async fn after_deallocate(
        &mut self,
        target: Target,
        d: Option<Deallocate>,
    ) -> Result<(), ProxyError> {
        match d {
            None => {}
            Some(Deallocate::Name(name)) => {
                self.statements.remove(&name);
                if let Some(slot) = self.slots.get_mut(target) {
                    slot.conn.prepared.remove(&name);
                    slot.to_close.remove(&name);
                }
                if let Some(o) = self.slots.get_mut(target.other()) {
                    if o.conn.prepared.remove(&name).is_some() {
                        o.to_close.insert(name);
                    }
                }
            }
            Some(Deallocate::All) => {
                self.statements.clear();
                if let Some(slot) = self.slots.get_mut(target) {
                    slot.conn.prepared.clear();
                    slot.to_close.clear();
                }
                if let Some(o) = self.slots.get_mut(target.other()) {
                    if !o.conn.prepared.is_empty() || !o.to_close.is_empty() {
                        o.conn.prepared.clear();
                        o.to_close.clear();
                        o.send_silent_query("DEALLOCATE ALL").await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Prepares the client's statement on this connection if it does not hold it, replies dropped.
async fn prepare_silently(
    slot: &mut Slot,
    name: &str,
    info: &StatementInfo,
) -> Result<(), ProxyError> {
    let mut out = bytes::BytesMut::new();
    let mut swallow = std::collections::VecDeque::new();
    slot.inject_statement(name, info, &mut out, &mut swallow);
    if out.is_empty() {
        return Ok(());
    }
    message::write_message(&mut out, b'S', |_| {});
    slot.push_unit(PendingUnit {
        forward: false,
        extended: true,
        sync_sent: true,
        ..PendingUnit::default()
    });
    slot.send(&out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements() {
        let name = |n: &str| Some(Deallocate::Name(n.to_string()));
        let table: Vec<(&str, Option<Deallocate>)> = vec![
            ("DEALLOCATE _pg3_0", name("_pg3_0")),
            ("deallocate prepare S1;", name("s1")),
            ("DEALLOCATE \"Mixed\"\"q\"", name("Mixed\"q")),
            ("DEALLOCATE ALL", Some(Deallocate::All)),
            ("deallocate prepare all ;", Some(Deallocate::All)),
            ("DEALLOCATE \"all\"", name("all")),
            ("DEALLOCATE", None),
            ("DEALLOCATE a; SELECT 1", None),
            ("DEALLOCATEx a", None),
            ("SELECT 1", None),
            ("DEALLOCATE \"open", None),
        ];
        for (sql, expected) in table {
            assert_eq!(parse(sql), expected, "{sql}");
        }
    }
}
