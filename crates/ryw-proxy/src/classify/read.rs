//! Is one query provably read-only? A real parse by sqlparser
//! (`PostgreSqlDialect`), then a walk of the whole tree with its `Visitor`:
//! every nested query (CTEs, subqueries, derived tables, set operations),
//! every expression and every `FROM` item.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::deny;

/// Parses `sql` (one statement, as the scan found) and says why it is not a
/// read, if it is not.
pub(super) fn check(sql: &str) -> Result<(), &'static str> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|_| "unparseable")?;
    let [statement] = statements.as_slice() else {
        // The scan saw one statement; a parser that sees another number
        // disagrees with PostgreSQL's lexer somewhere: do not trust it.
        return Err(if statements.is_empty() {
            "unparseable"
        } else {
            "multiple statements"
        });
    };
    let query = match statement {
        Statement::Query(q) => q,
        // EXPLAIN without ANALYZE runs nothing, EXPLAIN ANALYZE runs the
        // query: either way a read if the query is one.
        Statement::Explain { statement, .. } => match statement.as_ref() {
            Statement::Query(q) => q,
            other => return Err(not_a_query(other)),
        },
        other => return Err(not_a_query(other)),
    };
    match query.visit(&mut ReadOnly) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(why) => Err(why),
    }
}

fn not_a_query(statement: &Statement) -> &'static str {
    match statement {
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => "write",
        _ => "not a read",
    }
}

/// Breaks, with the reason, at the first thing that is not read-only.
struct ReadOnly;

impl Visitor for ReadOnly {
    type Break = &'static str;

    /// Called for every query, however deeply nested.
    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<Self::Break> {
        if !q.locks.is_empty() {
            return ControlFlow::Break("locking clause");
        }
        // Clauses of other dialects: sqlparser accepted something that is
        // not PostgreSQL.
        if q.for_clause.is_some()
            || q.settings.is_some()
            || q.format_clause.is_some()
            || !q.pipe_operators.is_empty()
        {
            return ControlFlow::Break("unparseable");
        }
        if let Some(with) = &q.with
            && with.cte_tables.iter().any(|cte| modifies(&cte.query.body))
        {
            return ControlFlow::Break("data-modifying CTE");
        }
        body(&q.body)
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Self::Break> {
        match e {
            Expr::Function(f) if denied(&f.name) => ControlFlow::Break("deny-listed function"),
            _ => ControlFlow::Continue(()),
        }
    }

    /// `FROM f(…)` is a `Table` with arguments, `FROM t, LATERAL f(…)` a
    /// `Function`: neither is an `Expr`, and the relation visitor misses
    /// the second.
    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<Self::Break> {
        match t {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. }
                if denied(name) =>
            {
                ControlFlow::Break("deny-listed function")
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// A query body's own verdict (nested queries get their own visit).
fn body(b: &SetExpr) -> ControlFlow<&'static str> {
    match b {
        SetExpr::Select(s) if s.into.is_some() => ControlFlow::Break("select into"),
        SetExpr::SetOperation { left, right, .. } => {
            body(left)?;
            body(right)
        }
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            ControlFlow::Break("write")
        }
        SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) | SetExpr::Table(_) => {
            ControlFlow::Continue(())
        }
    }
}

/// A CTE's body is a data-modifying statement.
fn modifies(b: &SetExpr) -> bool {
    matches!(
        b,
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
    )
}

fn denied(name: &ObjectName) -> bool {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => deny::entry(&ident.value).is_some(),
        // A name sqlparser could not reduce to an identifier: not provably safe.
        Some(ObjectNamePart::Function(_)) | None => true,
    }
}
