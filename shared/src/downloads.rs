//! Download links handed out and downloads served (tables `download_links` and
//! `export_downloads`, and the counters `download_links_issued` and `downloads` on `exports`).
//!
//! Both are written in batches ([`record`]), about once a second by each API process: minting
//! a link is on the hot path of `GET /api/export/{id}` and must not wait on a write. The
//! counters are advanced by the same transaction as the rows, so an export's counts and its
//! rows agree. Links of an export that no longer exists (pruned meanwhile) are skipped.

use std::net::IpAddr;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{Begin, DbError, Sql, text_enum};

text_enum! {
    /// Where a link's file is.
    pub enum Backend {
        /// Local disk, served by the API's `/files/` route (which records downloads).
        Local = "local",
        /// S3: a pre-signed URL; S3 serves it (downloads are not seen by the service).
        S3 = "s3",
    }
}

text_enum! {
    /// How a link was asked for.
    pub enum Via {
        /// `GET /api/export/{id}` or `GET /api/exports`.
        Api = "api",
        /// The dashboard's export page.
        Dashboard = "dashboard",
    }
}

/// Who a link was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// An API key (through the API, or a break-glass dashboard session).
    Key(Uuid),
    /// A person signed in to the dashboard (`operators.id`).
    Operator(Uuid),
}

/// A link handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuedLink {
    /// The link's id (in a local link's signed query).
    pub id: Uuid,
    /// The export whose file it downloads.
    pub export_id: Uuid,
    /// Through the API or the dashboard.
    pub via: Via,
    /// Who asked for it.
    pub holder: Holder,
    /// When it was minted.
    pub issued_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// Where the file is.
    pub backend: Backend,
}

/// A request the file endpoint answered under a valid link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Download {
    /// The export whose file it was.
    pub export_id: Uuid,
    /// The link used (`None`: a link from before links had ids).
    pub link_id: Option<Uuid>,
    /// When it was answered.
    pub started_at: OffsetDateTime,
    /// The response's status: 200, 206, 304 or 416.
    pub status: u16,
    /// The bytes a 206 sent (first and last, inclusive).
    pub range: Option<(u64, u64)>,
    /// Bytes of the file handed to the connection.
    pub bytes_sent: u64,
    /// Who downloaded.
    pub client_addr: IpAddr,
}

impl Download {
    /// Whether it sent file bytes (what the export's `downloads` counts).
    pub fn sent_file(&self) -> bool {
        matches!(self.status, 200 | 206)
    }
}

/// A new link id: a UUIDv7, ordered by the time it was minted (to the millisecond), so an
/// export's links are listed newest first by id and its primary key grows at its right edge.
pub fn new_link_id() -> Uuid {
    let millis = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let random = Uuid::new_v4();
    let random: [u8; 10] = random.as_bytes()[6..].try_into().expect("ten bytes");
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// Records links and downloads gathered by an API process, and advances their exports'
/// counters, in one transaction. Export rows are locked in id order first, so two processes
/// flushing at once cannot deadlock, and a locked export cannot be deleted before its rows are
/// in; records of exports that no longer exist are skipped.
///
/// A batch whose links are already recorded (its commit went through but its answer was lost,
/// and it is being written again) changes nothing: a link id is unique. (Such a batch with
/// downloads only would record them twice.)
pub async fn record(
    db: &mut impl Begin,
    links: &[IssuedLink],
    downloads: &[Download],
) -> Result<(), DbError> {
    if links.is_empty() && downloads.is_empty() {
        return Ok(());
    }
    let mut counts: std::collections::BTreeMap<Uuid, (i64, i64)> = Default::default();
    for link in links {
        counts.entry(link.export_id).or_default().0 += 1;
    }
    for download in downloads.iter().filter(|d| d.sent_file()) {
        counts.entry(download.export_id).or_default().1 += 1;
    }
    let tx = db.begin().await?;
    let ids: Vec<Uuid> = counts.keys().copied().collect();
    let (issued, sent): (Vec<i64>, Vec<i64>) = counts.values().copied().unzip();
    let counted = tx
        .query(
            "WITH batch AS (
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS b (id, links, downloads)
             ), locked AS (
                 SELECT e.id, b.links, b.downloads FROM exports e JOIN batch b USING (id)
                 ORDER BY e.id
                 FOR NO KEY UPDATE OF e
             )
             UPDATE exports e
             SET download_links_issued = e.download_links_issued + locked.links,
                 downloads = e.downloads + locked.downloads
             FROM locked WHERE e.id = locked.id
             RETURNING e.id",
            &[&ids, &issued, &sent],
        )
        .await?;
    let exist: std::collections::HashSet<Uuid> = counted.iter().map(|row| row.get(0)).collect();
    let links: Vec<IssuedLink> = links.iter().filter(|l| exist.contains(&l.export_id)).copied().collect();
    let downloads: Vec<Download> =
        downloads.iter().filter(|d| exist.contains(&d.export_id)).copied().collect();
    if !links.is_empty() {
        match insert_links(&tx, &links).await {
            Err(e) if e.is_unique_violation() => {
                tracing::info!(links = links.len(), "a batch of download links was already recorded");
                return Ok(());
            }
            written => written?,
        }
    }
    if !downloads.is_empty() {
        insert_downloads(&tx, &downloads).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Inserts links (of exports the caller has locked).
async fn insert_links(db: &impl Sql, links: &[IssuedLink]) -> Result<(), DbError> {
    let ids: Vec<Uuid> = links.iter().map(|l| l.id).collect();
    let exports: Vec<Uuid> = links.iter().map(|l| l.export_id).collect();
    let via: Vec<&str> = links.iter().map(|l| l.via.as_str()).collect();
    let keys: Vec<Option<Uuid>> = links
        .iter()
        .map(|l| match l.holder {
            Holder::Key(id) => Some(id),
            Holder::Operator(_) => None,
        })
        .collect();
    let operators: Vec<Option<Uuid>> = links
        .iter()
        .map(|l| match l.holder {
            Holder::Operator(id) => Some(id),
            Holder::Key(_) => None,
        })
        .collect();
    let issued: Vec<OffsetDateTime> = links.iter().map(|l| l.issued_at).collect();
    let expires: Vec<OffsetDateTime> = links.iter().map(|l| l.expires_at).collect();
    let backends: Vec<&str> = links.iter().map(|l| l.backend.as_str()).collect();
    db.execute(
        "INSERT INTO download_links (id, export_id, via, api_key_id, operator_id, issued_at, expires_at, backend)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[],
                              $6::timestamptz[], $7::timestamptz[], $8::text[])",
        &[&ids, &exports, &via, &keys, &operators, &issued, &expires, &backends],
    )
    .await?;
    Ok(())
}

/// Inserts downloads (of exports the caller has locked).
async fn insert_downloads(db: &impl Sql, downloads: &[Download]) -> Result<(), DbError> {
    let bigint = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let exports: Vec<Uuid> = downloads.iter().map(|d| d.export_id).collect();
    let links: Vec<Option<Uuid>> = downloads.iter().map(|d| d.link_id).collect();
    let started: Vec<OffsetDateTime> = downloads.iter().map(|d| d.started_at).collect();
    let statuses: Vec<i16> = downloads.iter().map(|d| i16::try_from(d.status).unwrap_or(i16::MAX)).collect();
    let firsts: Vec<Option<i64>> =
        downloads.iter().map(|d| d.range.map(|(first, _)| bigint(first))).collect();
    let lasts: Vec<Option<i64>> = downloads.iter().map(|d| d.range.map(|(_, last)| bigint(last))).collect();
    let bytes: Vec<i64> = downloads.iter().map(|d| bigint(d.bytes_sent)).collect();
    let clients: Vec<IpAddr> = downloads.iter().map(|d| d.client_addr).collect();
    db.execute(
        "INSERT INTO export_downloads
             (export_id, link_id, started_at, status, range_first, range_last, bytes_sent, client_addr)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::smallint[], $5::bigint[],
                              $6::bigint[], $7::bigint[], $8::inet[])",
        &[&exports, &links, &started, &statuses, &firsts, &lasts, &bytes, &clients],
    )
    .await?;
    Ok(())
}

/// A completed export's file as the file endpoint serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedFile {
    /// The export.
    pub export_id: Uuid,
    /// Hex SHA-256 of the file (its `ETag` and `Repr-Digest`).
    pub sha256: String,
}

/// The export an object key belongs to: keys are `exports/{export id}/{upload id}/{file name}`
/// (written by the worker's `export_statement` job; the download path of the API's spec names
/// the same segments).
pub fn export_of_key(key: &str) -> Option<Uuid> {
    key.strip_prefix("exports/")?.split('/').next()?.parse().ok()
}

/// The COMPLETED export whose file is at `key`, if any: one read by primary key.
pub async fn served_file(db: &impl Sql, key: &str) -> Result<Option<ServedFile>, DbError> {
    let Some(id) = export_of_key(key) else { return Ok(None) };
    let rows = db
        .query_cached(
            "SELECT sha256 FROM exports WHERE id = $1 AND file_key = $2 AND status = 'COMPLETED'",
            &[&id, &key],
        )
        .await?;
    Ok(rows
        .first()
        .and_then(|row| row.get::<_, Option<String>>(0))
        .map(|sha256| ServedFile { export_id: id, sha256 }))
}

/// Who a recorded link was issued to, named for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderName {
    /// A key: its name and prefix (`None`: deleted since).
    Key(Uuid, Option<(String, String)>),
    /// A person: their name (`None`: removed since).
    Operator(Uuid, Option<String>),
}

/// A link as the export page lists it.
#[derive(Debug, Clone)]
pub struct LinkRow {
    /// Its id.
    pub id: Uuid,
    /// Through the API or the dashboard.
    pub via: Via,
    /// Who asked for it.
    pub holder: HolderName,
    /// When it was minted.
    pub issued_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// Where the file is.
    pub backend: Backend,
}

/// A download as the export page lists it.
#[derive(Debug, Clone)]
pub struct DownloadRow {
    /// When it was answered.
    pub started_at: OffsetDateTime,
    /// The response's status.
    pub status: i16,
    /// The bytes a 206 sent (first and last, inclusive).
    pub range: Option<(i64, i64)>,
    /// Bytes of the file handed to the connection.
    pub bytes_sent: i64,
    /// Who downloaded.
    pub client_addr: IpAddr,
    /// The link used (`None`: a link from before links had ids).
    pub link_id: Option<Uuid>,
    /// Who that link was issued to (`None`: no link id, or not recorded yet).
    pub holder: Option<HolderName>,
}

/// Names the holder of a row that selected `HOLDER_COLUMNS`.
fn holder_name(row: &tokio_postgres::Row) -> Option<HolderName> {
    let key: Option<Uuid> = row.get("api_key_id");
    let operator: Option<Uuid> = row.get("operator_id");
    let key_name: Option<String> = row.get("key_name");
    let key_prefix: Option<String> = row.get("key_prefix");
    match (key, operator) {
        (Some(id), _) => Some(HolderName::Key(id, key_name.zip(key_prefix))),
        (None, Some(id)) => Some(HolderName::Operator(id, row.get("operator_name"))),
        (None, None) => None,
    }
}

/// The columns [`holder_name`] reads, from a link `l` joined to its key `k` and operator `o`.
const HOLDER_COLUMNS: &str =
    "l.api_key_id, l.operator_id, k.name AS key_name, k.prefix AS key_prefix, o.name AS operator_name";

/// The newest `limit` links of `export` (by id: ids are time-ordered, and the primary key holds
/// them in that order).
pub async fn links_of(db: &impl Sql, export: Uuid, limit: i64) -> Result<Vec<LinkRow>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT l.id, l.via, l.issued_at, l.expires_at, l.backend, {HOLDER_COLUMNS}
                 FROM download_links l
                 LEFT JOIN api_keys k ON k.id = l.api_key_id
                 LEFT JOIN operators o ON o.id = l.operator_id
                 WHERE l.export_id = $1
                 ORDER BY l.id DESC LIMIT $2"
            ),
            &[&export, &limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(LinkRow {
                id: row.get("id"),
                via: crate::db::decode(row, "via")?,
                holder: holder_name(row).expect("a link has one holder (download_links_one_holder)"),
                issued_at: row.get("issued_at"),
                expires_at: row.get("expires_at"),
                backend: crate::db::decode(row, "backend")?,
            })
        })
        .collect()
}

/// The newest `limit` downloads of `export`, each with its link's holder.
pub async fn downloads_of(db: &impl Sql, export: Uuid, limit: i64) -> Result<Vec<DownloadRow>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT d.started_at, d.status, d.range_first, d.range_last, d.bytes_sent, d.client_addr,
                        d.link_id, {HOLDER_COLUMNS}
                 FROM export_downloads d
                 LEFT JOIN download_links l ON l.export_id = d.export_id AND l.id = d.link_id
                 LEFT JOIN api_keys k ON k.id = l.api_key_id
                 LEFT JOIN operators o ON o.id = l.operator_id
                 WHERE d.export_id = $1
                 ORDER BY d.started_at DESC, d.id DESC LIMIT $2"
            ),
            &[&export, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let first: Option<i64> = row.get("range_first");
            let last: Option<i64> = row.get("range_last");
            DownloadRow {
                started_at: row.get("started_at"),
                status: row.get("status"),
                range: first.zip(last),
                bytes_sent: row.get("bytes_sent"),
                client_addr: row.get("client_addr"),
                link_id: row.get("link_id"),
                holder: holder_name(row),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_export() {
        let id = Uuid::new_v4();
        assert_eq!(
            export_of_key(&format!("exports/{id}/0123abcd/statement_A_2024-01-01_2024-01-31.csv")),
            Some(id)
        );
        assert_eq!(export_of_key("exports/not-a-uuid/x/s.csv"), None);
        assert_eq!(export_of_key(&format!("elsewhere/{id}/x/s.csv")), None);
    }

    #[test]
    fn link_ids_are_version_7_and_grow_with_time() {
        let first = new_link_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_link_id();
        assert_eq!(first.get_version_num(), 7);
        assert!(second > first, "{second} after {first}");
    }
}
