//! `Authorization: Bearer sk_…` authentication.

use poem_openapi::{SecurityScheme, auth::Bearer};
use shared::api_keys::{self, ApiKey};
use time::{Duration, OffsetDateTime};

use crate::{AppState, error::ApiError};

/// An API key (`sk_…`) sent as a bearer token.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "sk_<32 base62><6 checksum>")]
pub struct BearerKey(Bearer);

impl AppState {
    /// A pooled Postgres connection; a pool timeout or refused connection is 503.
    pub async fn db(&self) -> Result<deadpool_postgres::Object, ApiError> {
        Ok(self.pool.get().await.map_err(shared::db::DbError::from)?)
    }

    /// The active key behind the bearer token. A token with a bad checksum is refused without
    /// a database lookup. `last_used_at` is refreshed in the background at most once a minute.
    pub async fn authenticate(&self, auth: &BearerKey) -> Result<ApiKey, ApiError> {
        let token = auth.0.token.trim();
        if !api_keys::is_well_formed(token) {
            return Err(ApiError::Unauthorized);
        }
        let db = self.db().await?;
        let key = api_keys::authenticate(&db, token).await?.ok_or(ApiError::Unauthorized)?;
        if let Err(wait) = self.rate_limiter.check(key.id) {
            return Err(ApiError::RateLimited(wait.as_secs().max(1)));
        }
        let stale = key.last_used_at.is_none_or(|t| OffsetDateTime::now_utc() - t > Duration::minutes(1));
        if stale {
            let pool = self.pool.clone();
            let id = key.id;
            tokio::spawn(async move {
                if let Ok(db) = pool.get().await {
                    let _ = api_keys::touch(&db, id).await;
                }
            });
        }
        Ok(key)
    }
}
