//! A JSON column type that is `JSONB` on PostgreSQL and `TEXT` on SQLite, so one
//! schema serves both backends and PostgreSQL still gets a real, indexable JSONB.

use diesel::deserialize::FromSqlRow;
use diesel::deserialize::{self, FromSql};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::SqlType;
use diesel::sql_types::Text;
use diesel::sqlite::{Sqlite, SqliteValue};
use std::io::Write;

/// The SQL type: `jsonb` (oid 3802) on PostgreSQL, text on SQLite.
#[derive(Debug, Clone, Copy, Default, SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(oid = 3802, array_oid = 3807))]
#[diesel(sqlite_type(name = "Text"))]
pub struct JsonDoc;

/// A JSON value stored in a [`JsonDoc`] column.
#[derive(Debug, Clone, PartialEq, AsExpression, FromSqlRow)]
#[diesel(sql_type = JsonDoc)]
pub struct Json(pub serde_json::Value);

/// JSON text, valid already, bound to a [`JsonDoc`] parameter as it is (a batch's rows
/// share their metadata's text).
#[derive(Debug, Clone, Copy)]
pub struct JsonTextRef<'a>(pub &'a str);

impl ToSql<JsonDoc, Pg> for JsonTextRef<'_> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(&[JSONB_VERSION])?;
        out.write_all(self.0.as_bytes())?;
        Ok(IsNull::No)
    }
}

/// The binary jsonb format starts with a version byte.
const JSONB_VERSION: u8 = 1;

impl ToSql<JsonDoc, Pg> for Json {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(&[JSONB_VERSION])?;
        serde_json::to_writer(out, &self.0)?;
        Ok(IsNull::No)
    }
}

impl FromSql<JsonDoc, Pg> for Json {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        match value.as_bytes().split_first() {
            Some((&JSONB_VERSION, rest)) => Ok(Json(serde_json::from_slice(rest)?)),
            _ => Err("unsupported jsonb encoding version".into()),
        }
    }
}

impl ToSql<JsonDoc, Sqlite> for Json {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(serde_json::to_string(&self.0)?);
        Ok(IsNull::No)
    }
}

impl FromSql<JsonDoc, Sqlite> for Json {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
        Ok(Json(serde_json::from_str(&text)?))
    }
}
