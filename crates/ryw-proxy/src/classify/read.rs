//! Is one query provably read-only? A real parse by sqlparser
//! (`PostgreSqlDialect`), then a walk of the whole tree with its `Visitor`:
//! every nested query (CTEs, subqueries, derived tables, set operations),
//! every expression and every `FROM` item.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::{deny, local};

/// What a read calls and reads, for the catalog's verdict.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Uses {
    /// The functions it calls (as PostgreSQL would look them up: unquoted
    /// names folded to lower case).
    pub functions: Vec<Box<str>>,
    /// The relations it reads (the same way; CTE names left out).
    pub relations: Vec<Box<str>>,
}

/// Parses `sql` (one statement, as the scan found) and says why it is not a
/// read, if it is not; a read comes with what it uses.
pub(super) fn check(sql: &str) -> Result<Uses, &'static str> {
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
    let mut visitor = ReadOnly::default();
    match query.visit(&mut visitor) {
        ControlFlow::Continue(()) => {
            let ReadOnly {
                functions,
                relations,
                ctes,
                ..
            } = visitor;
            Ok(Uses {
                functions,
                relations: relations
                    .into_iter()
                    .filter(|r| !ctes.iter().any(|c| c == r))
                    .collect(),
            })
        }
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

/// Breaks, with the reason, at the first thing that is not read-only, or
/// that reads the serving node's own state; collects the functions called.
#[derive(Default)]
struct ReadOnly {
    functions: Vec<Box<str>>,
    relations: Vec<Box<str>>,
    /// Names the query's `WITH` clauses define (not relations).
    ctes: Vec<Box<str>>,
    /// The name of a `FROM f(…)` just seen: a function, not a relation.
    from_function: Option<ObjectName>,
}

impl ReadOnly {
    /// Notes a call of `name`; breaks if it may not leave the leader by its
    /// name alone.
    fn call(&mut self, name: &ObjectName) -> ControlFlow<&'static str> {
        let Some(ObjectNamePart::Identifier(ident)) = name.0.last() else {
            // A name sqlparser could not reduce to an identifier: not provably safe.
            return ControlFlow::Break("deny-listed function");
        };
        if !postgres_quoting(ident) {
            return ControlFlow::Break("unparseable");
        }
        if deny::entry(&ident.value).is_some() {
            return ControlFlow::Break("deny-listed function");
        }
        if local::listed(local::STATISTICS, &ident.value) {
            return ControlFlow::Break("statistics");
        }
        if local::listed(local::FUNCTIONS, &ident.value) {
            return ControlFlow::Break("node-local state");
        }
        let folded = folded(ident);
        if !self.functions.iter().any(|f| **f == *folded) {
            self.functions.push(folded.into());
        }
        ControlFlow::Continue(())
    }
}

/// A name quoted as PostgreSQL quotes names (not `'…'` or `` `…` ``, which
/// sqlparser takes as names in places PostgreSQL would not).
fn postgres_quoting(ident: &Ident) -> bool {
    matches!(ident.quote_style, None | Some('"'))
}

/// A name as PostgreSQL looks it up: unquoted names fold to lower case.
fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

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
        if let Some(with) = &q.with {
            if with.cte_tables.iter().any(|cte| modifies(&cte.query.body)) {
                return ControlFlow::Break("data-modifying CTE");
            }
            for cte in &with.cte_tables {
                self.ctes.push(folded(&cte.alias.name).into());
            }
        }
        body(&q.body)
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Self::Break> {
        match e {
            Expr::Function(f) => self.call(&f.name),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<Self::Break> {
        if self.from_function.as_ref() == Some(r) {
            self.from_function = None;
            return ControlFlow::Continue(());
        }
        match r.0.last() {
            Some(ObjectNamePart::Identifier(i)) if local::listed(local::STATISTICS, &i.value) => {
                ControlFlow::Break("statistics")
            }
            Some(ObjectNamePart::Identifier(i)) if local::listed(local::RELATIONS, &i.value) => {
                ControlFlow::Break("node-local state")
            }
            Some(ObjectNamePart::Identifier(i)) if !postgres_quoting(i) => {
                ControlFlow::Break("unparseable")
            }
            Some(ObjectNamePart::Identifier(i)) => {
                let name: Box<str> = folded(i).into();
                if !self.relations.contains(&name) {
                    self.relations.push(name);
                }
                ControlFlow::Continue(())
            }
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
            } => {
                self.from_function = Some(name.clone());
                self.call(name)
            }
            TableFactor::Function { name, .. } => self.call(name),
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
