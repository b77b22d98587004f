//! The one SQL interface both backends answer. The store's logic (ingest, the ledger, every read)
//! is written once against [`Sql`], in SQLite's dialect; SQLite runs it as it is, PostgreSQL runs
//! it translated once per statement ([`crate::pg::translate`]) and prepared with the parameters'
//! types. Values cross as [`Value`]s, read back with [`Row::get`] as with rusqlite.

use crate::StoreError;

/// Which SQL dialect a connection speaks, for the few statements written per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A statement parameter: always typed, even when null, so PostgreSQL can prepare with it.
/// Arrays are for PostgreSQL's statements of whole batches only.
#[derive(Debug, Clone)]
pub(crate) enum P<'a> {
    I(Option<i64>),
    F(Option<f64>),
    T(Option<&'a str>),
    B(Option<&'a [u8]>),
    IA(Vec<Option<i64>>),
    TA(Vec<Option<&'a str>>),
    BA(Vec<&'a [u8]>),
}

/// A value that can be bound as a parameter.
pub(crate) trait ToP {
    fn to_p(&self) -> P<'_>;
}

impl ToP for i64 {
    fn to_p(&self) -> P<'_> {
        P::I(Some(*self))
    }
}
impl ToP for Option<i64> {
    fn to_p(&self) -> P<'_> {
        P::I(*self)
    }
}
impl ToP for i32 {
    fn to_p(&self) -> P<'_> {
        P::I(Some(i64::from(*self)))
    }
}
impl ToP for bool {
    fn to_p(&self) -> P<'_> {
        P::I(Some(i64::from(*self)))
    }
}
impl ToP for Option<bool> {
    fn to_p(&self) -> P<'_> {
        P::I(self.map(i64::from))
    }
}
impl ToP for f64 {
    fn to_p(&self) -> P<'_> {
        P::F(Some(*self))
    }
}
impl ToP for Option<f64> {
    fn to_p(&self) -> P<'_> {
        P::F(*self)
    }
}
impl ToP for str {
    fn to_p(&self) -> P<'_> {
        P::T(Some(self))
    }
}
impl ToP for String {
    fn to_p(&self) -> P<'_> {
        P::T(Some(self.as_str()))
    }
}
impl ToP for Option<&str> {
    fn to_p(&self) -> P<'_> {
        P::T(*self)
    }
}
impl ToP for Option<String> {
    fn to_p(&self) -> P<'_> {
        P::T(self.as_deref())
    }
}
impl ToP for Option<&String> {
    fn to_p(&self) -> P<'_> {
        P::T(self.map(String::as_str))
    }
}
impl ToP for [u8; 16] {
    fn to_p(&self) -> P<'_> {
        P::B(Some(&self[..]))
    }
}
impl ToP for [u8] {
    fn to_p(&self) -> P<'_> {
        P::B(Some(self))
    }
}
impl<T: ToP + ?Sized> ToP for &T {
    fn to_p(&self) -> P<'_> {
        (**self).to_p()
    }
}
impl ToP for std::sync::Arc<str> {
    fn to_p(&self) -> P<'_> {
        P::T(Some(self))
    }
}

/// Parameters of a statement: `params![a, b]` as with rusqlite.
macro_rules! params {
    () => { &[] as &[$crate::db::P<'_>] };
    ($($x:expr),+ $(,)?) => { &[$($crate::db::ToP::to_p(&$x)),+] as &[$crate::db::P<'_>] };
}
pub(crate) use params;

/// A row read back.
#[derive(Debug, Clone)]
pub(crate) struct Row(pub(crate) Vec<Value>);

/// A type a column can be read as.
pub(crate) trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
    const NAME: &'static str;
}

impl FromValue for i64 {
    const NAME: &'static str = "integer";
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for i32 {
    const NAME: &'static str = "integer";
    fn from_value(v: &Value) -> Option<i32> {
        match v {
            Value::Int(i) => i32::try_from(*i).ok(),
            _ => None,
        }
    }
}
impl FromValue for bool {
    const NAME: &'static str = "boolean";
    fn from_value(v: &Value) -> Option<bool> {
        match v {
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}
impl FromValue for f64 {
    const NAME: &'static str = "real";
    fn from_value(v: &Value) -> Option<f64> {
        match v {
            Value::Real(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}
impl FromValue for String {
    const NAME: &'static str = "text";
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    const NAME: &'static str = "blob";
    fn from_value(v: &Value) -> Option<Vec<u8>> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    const NAME: &'static str = T::NAME;
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A column position.
pub(crate) trait RowIndex {
    fn index(self) -> usize;
}
impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}
impl RowIndex for i32 {
    fn index(self) -> usize {
        usize::try_from(self).unwrap_or(usize::MAX)
    }
}

impl Row {
    /// Column `i` as `T`.
    pub(crate) fn get<I: RowIndex, T: FromValue>(&self, i: I) -> Result<T, StoreError> {
        let i = i.index();
        let v = self.0.get(i).ok_or_else(|| StoreError::Corrupt(format!("no column {i}")))?;
        T::from_value(v).ok_or_else(|| StoreError::Corrupt(format!("column {i} is not {}: {v:?}", T::NAME)))
    }

    /// Column `i` as text (or null), moved out of the row (the row keeps a null there).
    pub(crate) fn take_text(&mut self, i: usize) -> Result<Option<String>, StoreError> {
        match self.0.get_mut(i) {
            Some(v @ Value::Text(_)) => match std::mem::replace(v, Value::Null) {
                Value::Text(t) => Ok(Some(t)),
                _ => Ok(None),
            },
            Some(Value::Null) => Ok(None),
            Some(v) => Err(StoreError::Corrupt(format!("column {i} is not text: {v:?}"))),
            None => Err(StoreError::Corrupt(format!("no column {i}"))),
        }
    }

    /// Column `i` as a blob, borrowed.
    pub(crate) fn blob(&self, i: usize) -> Option<&[u8]> {
        match self.0.get(i) {
            Some(Value::Blob(b)) => Some(b),
            _ => None,
        }
    }
}

/// A connection (or the transaction open on it): runs statements in the store's SQL.
pub(crate) trait Sql {
    /// Its dialect.
    fn dialect(&self) -> Dialect;
    /// Run a statement and read every row it returns.
    fn rows(&self, sql: &str, params: &[P<'_>]) -> Result<Vec<Row>, StoreError>;
    /// Run a statement; returns the rows it changed.
    fn exec(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError>;
    /// Run several statements without parameters.
    fn batch(&self, sql: &str) -> Result<(), StoreError>;
    /// The PostgreSQL connection behind, for its bulk statements (`COPY`).
    fn postgres(&self) -> Option<&crate::pg::PgConn> {
        None
    }
}

/// A statement of the store's SQL, run as with rusqlite (the backend caches the prepared form).
pub(crate) struct Stmt<'a> {
    db: &'a dyn Sql,
    sql: std::borrow::Cow<'a, str>,
}

/// The rows of a query, walked as with rusqlite.
pub(crate) struct Rows {
    rows: std::vec::IntoIter<Row>,
    current: Option<Row>,
}

impl Rows {
    /// The next row.
    pub(crate) fn next(&mut self) -> Result<Option<&mut Row>, StoreError> {
        self.current = self.rows.next();
        Ok(self.current.as_mut())
    }
}

impl Stmt<'_> {
    pub(crate) fn query(&mut self, params: &[P<'_>]) -> Result<Rows, StoreError> {
        Ok(Rows { rows: self.db.rows(&self.sql, params)?.into_iter(), current: None })
    }

    pub(crate) fn query_map<T>(&mut self, params: &[P<'_>], f: impl FnMut(&Row) -> Result<T, StoreError>) -> Result<std::vec::IntoIter<Result<T, StoreError>>, StoreError> {
        let mut f = f;
        Ok(self.db.rows(&self.sql, params)?.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }

    /// The first row, which must exist.
    pub(crate) fn query_row<T>(&mut self, params: &[P<'_>], f: impl FnOnce(&Row) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self.query_opt(params, f)? {
            Some(t) => Ok(t),
            None => Err(StoreError::Corrupt(format!("no row for {}", first_line(&self.sql)))),
        }
    }

    /// The first row, if any.
    pub(crate) fn query_opt<T>(&mut self, params: &[P<'_>], f: impl FnOnce(&Row) -> Result<T, StoreError>) -> Result<Option<T>, StoreError> {
        let rows = self.db.rows(&self.sql, params)?;
        rows.first().map(f).transpose()
    }

    pub(crate) fn execute(&mut self, params: &[P<'_>]) -> Result<usize, StoreError> {
        Ok(self.db.exec(&self.sql, params)? as usize)
    }
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

/// rusqlite's conveniences on any connection of the store.
pub(crate) trait SqlExt {
    fn prepare_cached<'a>(&'a self, sql: impl Into<std::borrow::Cow<'a, str>>) -> Result<Stmt<'a>, StoreError>;
    fn query_row<T>(&self, sql: &str, params: &[P<'_>], f: impl FnOnce(&Row) -> Result<T, StoreError>) -> Result<T, StoreError>;
    fn query_opt<T>(&self, sql: &str, params: &[P<'_>], f: impl FnOnce(&Row) -> Result<T, StoreError>) -> Result<Option<T>, StoreError>;
    fn execute(&self, sql: &str, params: &[P<'_>]) -> Result<usize, StoreError>;
}

impl SqlExt for dyn Sql + '_ {
    fn prepare_cached<'a>(&'a self, sql: impl Into<std::borrow::Cow<'a, str>>) -> Result<Stmt<'a>, StoreError> {
        Ok(Stmt { db: self, sql: sql.into() })
    }
    fn query_row<T>(&self, sql: &str, params: &[P<'_>], f: impl FnOnce(&Row) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
    fn query_opt<T>(&self, sql: &str, params: &[P<'_>], f: impl FnOnce(&Row) -> Result<T, StoreError>) -> Result<Option<T>, StoreError> {
        self.prepare_cached(sql)?.query_opt(params, f)
    }
    fn execute(&self, sql: &str, params: &[P<'_>]) -> Result<usize, StoreError> {
        Ok(self.exec(sql, params)? as usize)
    }
}

// SQLite: the store's SQL as it is, on rusqlite's statement cache.
impl Sql for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn rows(&self, sql: &str, params: &[P<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.prepare_cached(sql)?;
        bind(&mut stmt, params)?;
        let n = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(i) => Value::Int(i),
                    rusqlite::types::ValueRef::Real(f) => Value::Real(f),
                    rusqlite::types::ValueRef::Text(t) => {
                        Value::Text(String::from_utf8(t.to_vec()).map_err(|e| StoreError::Corrupt(format!("text column: {e}")))?)
                    }
                    rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(Row(vals));
        }
        Ok(out)
    }

    fn exec(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError> {
        let mut stmt = self.prepare_cached(sql)?;
        bind(&mut stmt, params)?;
        Ok(stmt.raw_execute()? as u64)
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        Ok(self.execute_batch(sql)?)
    }
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[P<'_>]) -> Result<(), StoreError> {
    // Numbered parameters (`?N`) may be left out of a statement; bind those it has.
    let count = stmt.parameter_count();
    for (i, p) in params.iter().enumerate() {
        let idx = i + 1;
        if idx > count {
            break;
        }
        match p {
            P::I(v) => stmt.raw_bind_parameter(idx, v)?,
            P::F(v) => stmt.raw_bind_parameter(idx, v)?,
            P::T(v) => stmt.raw_bind_parameter(idx, v)?,
            P::B(v) => stmt.raw_bind_parameter(idx, v)?,
            P::IA(_) | P::TA(_) | P::BA(_) => return Err(StoreError::Failed("array parameters are for PostgreSQL statements only".into())),
        }
    }
    Ok(())
}
