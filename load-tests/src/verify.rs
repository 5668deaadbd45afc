//! After a run: every acknowledged interaction is in the database exactly once —
//! the row whose id the service answered with exists (a "duplicate" answer names
//! the original row, possibly of an earlier run), and no interaction of the run
//! is stored twice.

use std::fmt;

use sqlx::Connection;

pub struct Verification {
    pub acknowledged: u64,
    pub stored: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub stored_unacknowledged: u64,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicated == 0
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "verify: acknowledged={} stored={} missing={} duplicated={} stored_but_not_acknowledged={} => {}",
            self.acknowledged,
            self.stored,
            self.missing,
            self.duplicated,
            self.stored_unacknowledged,
            if self.ok() { "OK" } else { "FAILED" }
        )
    }
}

/// Counts, per interaction of the run, how many rows hold its idempotency key.
pub async fn exactly_once(
    database_url: &str,
    run: &str,
    acked: &[bool],
    ids: &[(u64, String)],
) -> anyhow::Result<Verification> {
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    let mut answered: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
    answered.sort_unstable();
    answered.dedup();
    let mut found = 0i64;
    for chunk in answered.chunks(50_000) {
        let chunk: Vec<&str> = chunk.to_vec();
        found += sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM interactions WHERE id = ANY($1::text[]::uuid[])",
        )
        .bind(chunk)
        .fetch_one(&mut conn)
        .await?;
    }
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM interactions WHERE idempotency_key LIKE $1 || '-%'",
    )
    .bind(run)
    .fetch_all(&mut conn)
    .await?;
    let mut rows = vec![0u32; acked.len()];
    for key in &keys {
        if let Some(seq) = key.rsplit('-').next().and_then(|s| s.parse::<usize>().ok())
            && seq < rows.len()
        {
            rows[seq] += 1;
        }
    }
    let mut report = Verification {
        acknowledged: 0,
        stored: keys.len() as u64,
        missing: 0,
        duplicated: 0,
        stored_unacknowledged: 0,
    };
    for (was_acked, count) in acked.iter().zip(&rows) {
        report.acknowledged += u64::from(*was_acked);
        report.duplicated += u64::from(*count > 1);
        report.stored_unacknowledged += u64::from(!was_acked && *count > 0);
    }
    report.missing = answered.len() as u64 - found as u64
        + (report.acknowledged - ids.len().min(report.acknowledged as usize) as u64);
    Ok(report)
}
