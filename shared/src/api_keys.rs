//! API keys: `sk_` + 32 random base62 characters + a 6-character checksum.
//!
//! Only the SHA-256 of the whole key is stored. The checksum (base62 of the first four bytes of
//! the SHA-256 of the random part) lets a typo be refused without a database lookup and lets
//! secret scanners recognise a real key. Table: `api_keys`.

use crate::db::Sql;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{DbError, decode, text_enum};

const PREFIX: &str = "sk_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters of the key shown in listings (`sk_` + 8).
const DISPLAY_PREFIX_LEN: usize = PREFIX.len() + 8;

/// A freshly generated key. The plaintext exists only here, to be shown once.
pub struct NewKey {
    /// The whole key: shown once, never stored.
    pub plaintext: String,
    /// Its SHA-256: what is stored.
    pub hash: [u8; 32],
    /// What operators see (`sk_` + 8 characters).
    pub prefix: String,
}

impl NewKey {
    /// A new random key with its checksum.
    pub fn generate() -> Self {
        // Two v4 UUIDs give 244 random bits from the OS generator; 32 base62 digits keep 190.
        let mut entropy = u128::from_le_bytes(*Uuid::new_v4().as_bytes());
        let mut more = u128::from_le_bytes(*Uuid::new_v4().as_bytes());
        let mut random = String::with_capacity(RANDOM_LEN);
        for i in 0..RANDOM_LEN {
            let source = if i < RANDOM_LEN / 2 { &mut entropy } else { &mut more };
            random.push(BASE62[(*source % 62) as usize] as char);
            *source /= 62;
        }
        let plaintext = format!("{PREFIX}{random}{}", checksum(&random));
        Self { hash: hash_key(&plaintext), prefix: plaintext[..DISPLAY_PREFIX_LEN].to_owned(), plaintext }
    }
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// Whether `candidate` has the shape and checksum of one of our keys. No database access.
pub fn is_well_formed(candidate: &str) -> bool {
    let Some(body) = candidate.strip_prefix(PREFIX) else {
        return false;
    };
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, check) = body.split_at(RANDOM_LEN);
    checksum(random) == check
}

/// The display prefix of a well-formed key (`sk_` and 8 characters, as lists show keys);
/// `None` for anything else.
pub fn prefix_of(candidate: &str) -> Option<&str> {
    is_well_formed(candidate).then(|| &candidate[..DISPLAY_PREFIX_LEN])
}

/// The SHA-256 of a key: how it is stored and looked up.
pub fn hash_key(plaintext: &str) -> [u8; 32] {
    Sha256::digest(plaintext.as_bytes()).into()
}

fn checksum(random: &str) -> String {
    let digest = Sha256::digest(random.as_bytes());
    let mut n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

text_enum! {
    /// Who may do what with a key (`api_keys.role`).
    pub enum Role {
        /// Requests and downloads exports of its accounts.
        Client = "client",
        /// Also signs in to the dashboard; always has every account.
        Admin = "admin",
    }
}

/// A key as the service sees it after authentication.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The key's id.
    pub id: Uuid,
    /// A name to recognise it by.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Its display prefix (`sk_` + 8 characters).
    pub prefix: String,
    /// What it may do.
    pub role: Role,
    /// `None`: every account.
    pub allowed_accounts: Option<Vec<String>>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was last used (written at most once a minute).
    pub last_used_at: Option<OffsetDateTime>,
    /// Set by `keys revoke`: final.
    pub revoked_at: Option<OffsetDateTime>,
    /// Set by the dashboard's Deactivate, cleared by its Reactivate.
    pub deactivated_at: Option<OffsetDateTime>,
}

impl ApiKey {
    /// What the audit trail records of a created key (never its secret).
    pub fn created_details(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "prefix": self.prefix,
            "role": self.role.as_str(),
            "accounts": self.allowed_accounts,
        })
    }
}

/// Whether a key works, and whether that can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Works.
    Active,
    /// Refused by the API and the dashboard until reactivated.
    Deactivated,
    /// Refused for good: a revoked key is never reactivated.
    Revoked,
}

impl KeyState {
    /// The state as `keys list` and the dashboard show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deactivated => "deactivated",
            Self::Revoked => "revoked",
        }
    }
}

impl ApiKey {
    /// A key row; a role this build does not know is an error ([`DbError::Decode`]).
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.get("id"),
            name: row.get("name"),
            description: row.get("description"),
            prefix: row.get("prefix"),
            role: decode(row, "role")?,
            allowed_accounts: row.get("allowed_accounts"),
            created_at: row.get("created_at"),
            last_used_at: row.get("last_used_at"),
            revoked_at: row.get("revoked_at"),
            deactivated_at: row.get("deactivated_at"),
        })
    }

    /// Whether the key works (revoked wins over deactivated).
    pub fn state(&self) -> KeyState {
        match (self.revoked_at, self.deactivated_at) {
            (Some(_), _) => KeyState::Revoked,
            (None, Some(_)) => KeyState::Deactivated,
            (None, None) => KeyState::Active,
        }
    }

    /// Whether the key may export and read `account`.
    pub fn may_access(&self, account: &str) -> bool {
        self.allowed_accounts.as_ref().is_none_or(|allowed| allowed.iter().any(|a| a == account))
    }
}

const COLUMNS: &str = "id, name, description, prefix, role, allowed_accounts, created_at, last_used_at, \
    revoked_at, deactivated_at";

/// The condition for a key that works (neither revoked nor deactivated), on `api_keys` as `k`.
pub(crate) const ACTIVE: &str = "k.revoked_at IS NULL AND k.deactivated_at IS NULL";

/// Why a key cannot be made as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeySpecError {
    /// A client key's scope is never implied: an empty account list is not "every account".
    #[error(
        "a client key needs its scope: list the accounts it may export, or choose all accounts explicitly"
    )]
    NoScope,
    /// Both listed accounts and all accounts were asked for.
    #[error("choose either listed accounts or all accounts, not both")]
    BothScopes,
    /// An admin key restricted to accounts would still see every account on the dashboard.
    #[error("an admin key cannot be restricted to accounts (admins see every account)")]
    RestrictedAdmin,
}

impl<'a> KeySpec<'a> {
    /// The accounts the key may access (`None`: every account), or why the spec is refused.
    /// A client key names its accounts or says "all accounts"; an admin key always has every
    /// account (saying so is allowed, listing accounts is not).
    pub fn validate(&self) -> Result<Option<&'a [String]>, KeySpecError> {
        match (self.role, self.accounts.is_empty(), self.all_accounts) {
            (_, false, true) => Err(KeySpecError::BothScopes),
            (Role::Admin, false, false) => Err(KeySpecError::RestrictedAdmin),
            (Role::Admin, true, _) | (Role::Client, true, true) => Ok(None),
            (Role::Client, true, false) => Err(KeySpecError::NoScope),
            (Role::Client, false, false) => Ok(Some(self.accounts)),
        }
    }
}

/// Why a key was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The spec is refused.
    #[error(transparent)]
    Invalid(#[from] KeySpecError),
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Validates and stores a new key and returns it with its plaintext (to be shown once).
pub async fn create(db: &impl Sql, new: &KeySpec<'_>) -> Result<(ApiKey, NewKey), CreateError> {
    let allowed_accounts = new.validate()?;
    let key = NewKey::generate();
    let row = db
        .query_one(
            &format!(
                "INSERT INTO api_keys (id, name, description, prefix, key_hash, role, allowed_accounts)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::new_v4(),
                &new.name,
                &new.description,
                &key.prefix,
                &key.hash.as_slice(),
                &new.role,
                &allowed_accounts,
            ],
        )
        .await
        .map_err(DbError::from)?;
    Ok((ApiKey::from_row(&row)?, key))
}

/// What a new key is for.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec<'a> {
    /// A name to recognise the key by (1 to 200 characters).
    pub name: &'a str,
    /// What the key is for.
    pub description: &'a str,
    /// What the key may do.
    pub role: Role,
    /// The accounts a client key may access (`--account`, repeatable).
    pub accounts: &'a [String],
    /// Every account, chosen explicitly (`--all-accounts`).
    pub all_accounts: bool,
}

/// The active key with this plaintext, if any.
pub async fn authenticate(db: &impl Sql, plaintext: &str) -> Result<Option<ApiKey>, DbError> {
    if !is_well_formed(plaintext) {
        return Ok(None);
    }
    let hash = hash_key(plaintext);
    let sql = format!("SELECT {COLUMNS} FROM api_keys k WHERE key_hash = $1 AND {ACTIVE}");
    let rows = db.query_cached(&sql, &[&hash.as_slice()]).await?;
    rows.first().map(ApiKey::from_row).transpose()
}

/// The name of key `id` (`None` when it was deleted).
pub(crate) async fn name_of(db: &impl Sql, id: Uuid) -> Result<Option<String>, DbError> {
    Ok(db.query_opt("SELECT name FROM api_keys WHERE id = $1", &[&id]).await?.map(|r| r.get(0)))
}

/// Records use of a key, at most once a minute per key (no write on every request).
pub async fn touch(db: &impl Sql, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE api_keys SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Every key, newest first (`statement-api keys list`).
pub async fn list(db: &impl Sql) -> Result<Vec<ApiKey>, DbError> {
    let rows =
        db.query(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"), &[]).await?;
    rows.iter().map(ApiKey::from_row).collect()
}

/// At most `limit` keys, newest first, after the key `after` (none when that key is gone).
pub async fn page(db: &impl Sql, after: Option<Uuid>, limit: i64) -> Result<Vec<ApiKey>, DbError> {
    let rows = match after {
        None => {
            db.query(
                &format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC LIMIT $1"),
                &[&limit],
            )
            .await?
        }
        Some(after) => {
            db.query(
                &format!(
                    "SELECT {COLUMNS} FROM api_keys
                     WHERE (created_at, id) < (SELECT created_at, id FROM api_keys WHERE id = $1)
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                ),
                &[&after, &limit],
            )
            .await?
        }
    };
    rows.iter().map(ApiKey::from_row).collect()
}

/// The id of the key whose id or display prefix is `id_or_prefix`, whatever its state.
pub async fn resolve(db: &impl Sql, id_or_prefix: &str) -> Result<Option<Uuid>, DbError> {
    let id = Uuid::parse_str(id_or_prefix).ok();
    let row = db
        .query_opt("SELECT id FROM api_keys WHERE id = $1 OR prefix = $2 LIMIT 1", &[&id, &id_or_prefix])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Revokes the key whose id or display prefix is `id_or_prefix`, active or deactivated, for
/// good, and ends its dashboard sessions. Returns the ids of those it revoked.
pub async fn revoke(db: &impl Sql, id_or_prefix: &str) -> Result<Vec<Uuid>, DbError> {
    let id = Uuid::parse_str(id_or_prefix).ok();
    let rows = db
        .query(
            "WITH revoked AS (
                 UPDATE api_keys SET revoked_at = now()
                 WHERE revoked_at IS NULL AND (id = $1 OR prefix = $2) RETURNING id
             ), ended AS (
                 DELETE FROM admin_sessions WHERE api_key_id IN (SELECT id FROM revoked)
             )
             SELECT id FROM revoked",
            &[&id, &id_or_prefix],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What a deactivate or reactivate did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Changed as asked.
    Changed,
    /// Already in the asked state.
    Unchanged,
    /// The key is revoked: that is final, it is neither deactivated nor reactivated.
    Revoked,
    /// No such key.
    NotFound,
}

/// Deactivates (`active = false`) or reactivates a key by id; only an active key is
/// deactivated and only a deactivated one reactivated, never a revoked one. Deactivation also
/// ends the key's dashboard sessions: reactivating never revives them.
pub async fn set_active(db: &impl Sql, id: Uuid, active: bool) -> Result<Activation, DbError> {
    // One statement: the state is read and changed under the row's lock (a concurrent
    // `keys revoke` either happens first, and the change is refused, or after).
    let row = db
        .query_one(
            "WITH target AS (
                 SELECT id, revoked_at IS NOT NULL AS revoked FROM api_keys WHERE id = $1 FOR UPDATE
             ), changed AS (
                 UPDATE api_keys k
                 SET deactivated_at = CASE WHEN $2 THEN NULL ELSE now() END
                 FROM target
                 WHERE k.id = target.id AND NOT target.revoked
                   AND (k.deactivated_at IS NULL) = NOT $2
                 RETURNING k.id
             ), ended AS (
                 DELETE FROM admin_sessions WHERE NOT $2 AND api_key_id IN (SELECT id FROM changed)
             )
             SELECT (SELECT revoked FROM target), (SELECT count(*) FROM changed)",
            &[&id, &active],
        )
        .await?;
    Ok(match (row.get::<_, Option<bool>>(0), row.get::<_, i64>(1)) {
        (None, _) => Activation::NotFound,
        (Some(true), _) => Activation::Revoked,
        (Some(false), 0) => Activation::Unchanged,
        (Some(false), _) => Activation::Changed,
    })
}

/// Deletes a key for good (its exports stay, without an owner). Returns whether it existed.
pub async fn delete(db: &impl Sql, id: Uuid) -> Result<bool, DbError> {
    Ok(db.execute("DELETE FROM api_keys WHERE id = $1", &[&id]).await? == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = NewKey::generate();
        let b = NewKey::generate();
        assert!(is_well_formed(&a.plaintext), "{}", a.plaintext);
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(a.plaintext.len(), 3 + 32 + 6);
        assert!(a.plaintext.starts_with(&a.prefix));
        assert!(!format!("{a:?}").contains(&a.plaintext[12..]), "Debug must not print the secret");
    }

    #[test]
    fn a_client_key_names_its_scope_and_an_admin_key_has_every_account() {
        let accounts = ["ACC-1".to_owned()];
        let spec = |role, accounts: &'static [String], all_accounts| KeySpec {
            name: "k",
            description: "",
            role,
            accounts,
            all_accounts,
        };
        let listed: &'static [String] = Box::leak(Box::new(accounts));
        assert_eq!(spec(Role::Client, &[], false).validate(), Err(KeySpecError::NoScope));
        assert_eq!(spec(Role::Client, &[], true).validate(), Ok(None));
        assert_eq!(spec(Role::Client, listed, false).validate(), Ok(Some(listed)));
        assert_eq!(spec(Role::Client, listed, true).validate(), Err(KeySpecError::BothScopes));
        assert_eq!(spec(Role::Admin, &[], false).validate(), Ok(None));
        assert_eq!(spec(Role::Admin, &[], true).validate(), Ok(None));
        assert_eq!(spec(Role::Admin, listed, false).validate(), Err(KeySpecError::RestrictedAdmin));
    }

    #[test]
    fn a_single_typo_fails_the_checksum() {
        let key = NewKey::generate().plaintext;
        let mut chars: Vec<char> = key.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(!is_well_formed(&typo));
        assert!(!is_well_formed("sk_short"));
        assert!(!is_well_formed(&key.replacen("sk_", "pk_", 1)));
    }
}
