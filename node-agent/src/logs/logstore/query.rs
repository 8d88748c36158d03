//! The filters of `get_msgs` / `del_msgs` turned into SQL over one log file.

use rusqlite::{params_from_iter, Connection};
use schemas::LogMessage;

use crate::logs::loglevels::LevelFilter;

/// The filters of `get_msgs` / `del_msgs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub(crate) jobid: Option<String>,
    /// ms since the epoch, inclusive.
    pub(crate) timefrom: Option<u64>,
    /// ms since the epoch, inclusive.
    pub(crate) timeto: Option<u64>,
    pub(crate) levels: LevelFilter,
}

/// The newest `limit` matches in one file, newest first; it stops after the message that used up
/// `bytes_left` (their texts' sizes are taken from it).
pub(super) fn select(
    conn: &Connection,
    query: &Query,
    limit: usize,
    bytes_left: &mut usize,
) -> Result<Vec<LogMessage>, rusqlite::Error> {
    let (clause, mut values) = where_clause(query);
    values.push(rusqlite::types::Value::Integer(limit as i64));
    let sql = format!(
        "SELECT id, jobid, domain, name, epoch, level, data FROM logs WHERE {clause} ORDER BY id DESC LIMIT ?"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(&values), |row| {
        Ok(LogMessage {
            id: row.get(0)?,
            jobid: row.get(1)?,
            domain: row.get(2)?,
            name: row.get(3)?,
            epoch: row.get(4)?,
            level: row.get(5)?,
            data: row.get(6)?,
        })
    })?;
    let mut messages = Vec::new();
    for row in rows {
        if *bytes_left == 0 {
            break;
        }
        let m = row?;
        *bytes_left = bytes_left.saturating_sub(size(&m));
        messages.push(m);
    }
    Ok(messages)
}

/// About the bytes of a message's JSON.
fn size(m: &LogMessage) -> usize {
    const FIELDS: usize = 100;
    FIELDS + m.jobid.len() + m.domain.len() + m.name.len() + m.data.len()
}

/// The SQL condition of a query and its parameters.
pub(super) fn where_clause(query: &Query) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut conditions = vec!["1".to_owned()];
    let mut values = Vec::new();
    if let Some(jobid) = &query.jobid {
        conditions.push("jobid = ?".into());
        values.push(Value::Text(jobid.clone()));
    }
    if let Some(from) = query.timefrom {
        conditions.push("epoch >= ?".into());
        values.push(Value::Integer(from.min(i64::MAX as u64) as i64));
    }
    if let Some(to) = query.timeto {
        conditions.push("epoch <= ?".into());
        values.push(Value::Integer(to.min(i64::MAX as u64) as i64));
    }
    if !query.levels.is_all() {
        // Levels are numbers: writing them into the SQL is safe and keeps the statement cacheable.
        let list: Vec<String> = query.levels.levels().map(|l| l.to_string()).collect();
        conditions.push(format!("level IN ({})", list.join(",")));
    }
    (conditions.join(" AND "), values)
}
