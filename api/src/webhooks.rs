//! `/api/webhook-endpoints`: a key's webhook endpoints (register, list, read, delete, rotate the
//! secret, enable again), their delivery log and its resend; and the body of a webhook event,
//! which the worker renders with this API's own representation of the export.
//!
//! A key sees only its own endpoints (anyone else's is 404). An endpoint's URL is checked at
//! registration (https unless allowed, and a host that is not, and does not resolve to, a
//! private or otherwise special-purpose address unless allowed: 422) and again by the worker
//! at every delivery. Its secret is shown once: in the answer to the registration and to each
//! rotation.

use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::{Example, ToJSON as _},
};
use secrecy::ExposeSecret as _;
use shared::{
    api_keys::ApiKey,
    audit::Outcome,
    exports::Export,
    statement::FieldError,
    webhooks::{
        self, EventType, MAX_DESCRIPTION_CHARS, MAX_ENDPOINTS_PER_KEY, Secret,
        address::{EndpointUrl, Refused},
        deliveries::{self, DeliveryStatus, ErrorClass},
    },
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    ApiTags, AppState,
    auth::BearerKey,
    client_addr::ClientAddr,
    error::{ApiError, ErrorStatuses, Errors},
    input::{FromJsonFields, JsonFields, StrictJson},
};

/// The body of a webhook event: `{"type", "timestamp", "data"}` (Standard Webhooks), `data`
/// being the export as `GET /api/export/{reference_id}` returns it, without a download link
/// (a client GETs the export for a fresh one). The worker calls it once per event and keeps
/// the bytes.
pub fn event_body(
    event_type: EventType,
    occurred_at: OffsetDateTime,
    export: Export,
) -> anyhow::Result<String> {
    let data = crate::exports::representation(export)?.to_json();
    let timestamp = occurred_at.format(&time::format_description::well_known::Rfc3339)?;
    let body = serde_json::json!({ "type": event_type.as_str(), "timestamp": timestamp, "data": data });
    Ok(serde_json::to_string(&body)?)
}

/// A webhook endpoint to register. Every field must have exactly its JSON type; unknown fields
/// are refused.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub(crate) struct WebhookEndpointRequest {
    /// Where to POST the events: an `https://` URL (`http://` only where the operator allows
    /// it), without user name, password or fragment, whose host is not (and does not resolve
    /// to) a loopback, private, link-local or other special-purpose address.
    #[oai(validator(max_length = 2048))]
    pub url: String,
    /// The events to send, each once (at least one; all four when absent).
    #[oai(validator(min_items = 1, max_items = 4, unique_items))]
    pub event_types: Option<Vec<EventType>>,
    /// What the endpoint is for (at most 500 characters; empty when absent).
    #[oai(validator(max_length = 500))]
    pub description: Option<String>,
}

impl FromJsonFields for WebhookEndpointRequest {
    fn from_fields(fields: &mut JsonFields) -> Option<Self> {
        let url = fields.string("url");
        let event_types = fields.optional_strings("event_types", |raw| {
            EventType::parse(raw).ok_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|e| e.as_str()).collect();
                FieldError::new("event_types", format!("must each be one of: {}", known.join(", ")))
            })
        });
        let description = fields.optional_string("description");
        Some(Self { url: url?, event_types: event_types?, description: description? })
    }
}

impl Example for WebhookEndpointRequest {
    fn example() -> Self {
        Self {
            url: "https://hooks.example.com/statements".into(),
            event_types: Some(vec![EventType::ExportCompleted, EventType::ExportFailed]),
            description: Some("Accounting system".into()),
        }
    }
}

/// A webhook endpoint. `secret` is present only in the answer to its registration and to a
/// rotation: keep it then, it is never shown again.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub(crate) struct WebhookEndpoint {
    /// The endpoint's id.
    pub id: Uuid,
    /// Where events are POSTed.
    pub url: String,
    /// What it is for.
    pub description: String,
    /// The events it receives.
    pub event_types: Vec<EventType>,
    /// `false` once it has failed for `WEBHOOK_DISABLE_AFTER_SECS` (a day by default): enable it
    /// again with `POST /api/webhook-endpoints/{endpoint_id}/enable`.
    pub enabled: bool,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// When its secret was last rotated.
    pub secret_rotated_at: Option<OffsetDateTime>,
    /// Until when the secret before the last rotation still signs deliveries too.
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    /// Every attempt since then has failed.
    pub failing_since: Option<OffsetDateTime>,
    /// When it was disabled.
    pub disabled_at: Option<OffsetDateTime>,
    /// The signing secret (`whsec_` + base64 of 32 random bytes), for a Standard Webhooks
    /// verifier: only in the answer to the registration and to a rotation.
    pub secret: Option<String>,
}

impl WebhookEndpoint {
    fn new(endpoint: webhooks::Endpoint, secret: Option<&Secret>) -> Self {
        Self {
            id: endpoint.id,
            url: endpoint.url,
            description: endpoint.description,
            event_types: endpoint.event_types,
            enabled: endpoint.disabled_at.is_none(),
            created_at: endpoint.created_at,
            secret_rotated_at: endpoint.secret_rotated_at,
            previous_secret_expires_at: endpoint.previous_secret_expires_at,
            failing_since: endpoint.failing_since,
            disabled_at: endpoint.disabled_at,
            secret: secret.map(|s| s.to_text().expose_secret().to_owned()),
        }
    }
}

impl Example for WebhookEndpoint {
    fn example() -> Self {
        Self {
            id: EXAMPLE_ENDPOINT,
            url: "https://hooks.example.com/statements".into(),
            description: "Accounting system".into(),
            event_types: vec![EventType::ExportCompleted, EventType::ExportFailed],
            enabled: true,
            created_at: EXAMPLE_TIME,
            secret_rotated_at: None,
            previous_secret_expires_at: None,
            failing_since: None,
            disabled_at: None,
            secret: Some("whsec_UNhY4JhezH9gQYqvDMWrWH9CwlcKiECVqejMrND2VFw=".into()),
        }
    }
}

/// A key's webhook endpoints, oldest first (at most 10).
#[derive(Debug, Object)]
#[oai(example)]
pub(crate) struct WebhookEndpointList {
    /// The endpoints.
    pub items: Vec<WebhookEndpoint>,
}

impl Example for WebhookEndpointList {
    fn example() -> Self {
        Self { items: vec![WebhookEndpoint { secret: None, ..WebhookEndpoint::example() }] }
    }
}

/// One attempt of a delivery.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub(crate) struct WebhookAttempt {
    /// 1 for the first.
    pub attempt: i32,
    /// When it started.
    pub attempted_at: OffsetDateTime,
    /// From sending to the endpoint's answer (or the failure), in milliseconds.
    pub latency_ms: Option<f64>,
    /// The endpoint's HTTP status, if it answered.
    pub response_status: Option<i32>,
    // No doc comment (see `ExportAccepted::status`): `WebhookErrorClass` documents itself.
    pub error_class: Option<ErrorClass>,
    /// The first 512 bytes of the endpoint's answer.
    pub response_excerpt: Option<String>,
}

/// One event sent to one endpoint: its state, its last attempt and every attempt.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub(crate) struct WebhookDelivery {
    /// The delivery's id.
    pub id: Uuid,
    /// The event's id: the `webhook-id` header of every attempt (deduplicate on it).
    pub event_id: Uuid,
    // See `WebhookAttempt::error_class`.
    pub event_type: EventType,
    /// The export the event is about.
    pub export_id: Uuid,
    // See `WebhookAttempt::error_class`.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i32,
    /// When the event was recorded for this endpoint.
    pub created_at: OffsetDateTime,
    /// When the next attempt is due (pending or retrying).
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it succeeded, failed for good or ended unsent.
    pub finished_at: Option<OffsetDateTime>,
    /// The last attempt's HTTP status, if the endpoint answered.
    pub response_status: Option<i32>,
    /// The last attempt's latency in milliseconds.
    pub latency_ms: Option<f64>,
    // See `WebhookAttempt::error_class`: the last attempt's.
    pub error_class: Option<ErrorClass>,
    /// Every attempt, first first.
    pub attempt_log: Vec<WebhookAttempt>,
}

impl From<deliveries::Delivery> for WebhookDelivery {
    fn from(delivery: deliveries::Delivery) -> Self {
        let last = delivery.last_attempt().cloned();
        Self {
            id: delivery.id,
            event_id: delivery.event_id,
            event_type: delivery.event_type,
            export_id: delivery.export_id,
            status: delivery.status,
            attempts: delivery.attempts.len() as i32,
            created_at: delivery.created_at,
            next_attempt_at: delivery.next_attempt_at,
            finished_at: delivery.finished_at,
            response_status: last.as_ref().and_then(|a| a.response_status),
            latency_ms: last.as_ref().and_then(|a| a.latency_ms),
            error_class: last.as_ref().and_then(|a| a.error),
            attempt_log: delivery
                .attempts
                .into_iter()
                .map(|a| WebhookAttempt {
                    attempt: a.attempt,
                    attempted_at: a.attempted_at,
                    latency_ms: a.latency_ms,
                    response_status: a.response_status,
                    error_class: a.error,
                    response_excerpt: a.response_excerpt,
                })
                .collect(),
        }
    }
}

impl Example for WebhookDelivery {
    fn example() -> Self {
        Self {
            id: uuid::uuid!("1f0c6a52-3d4e-4b8a-9c2d-7e6f5a4b3c2d"),
            event_id: uuid::uuid!("7b2e9d10-5c4a-4f3e-8d2c-1a0b9c8d7e6f"),
            event_type: EventType::ExportCompleted,
            export_id: uuid::uuid!("550e8400-e29b-41d4-a716-446655440000"),
            status: DeliveryStatus::Retrying,
            attempts: 1,
            created_at: EXAMPLE_TIME,
            next_attempt_at: Some(EXAMPLE_TIME + time::Duration::seconds(5)),
            finished_at: None,
            response_status: Some(503),
            latency_ms: Some(41.7),
            error_class: Some(ErrorClass::HttpStatus),
            attempt_log: vec![WebhookAttempt {
                attempt: 1,
                attempted_at: EXAMPLE_TIME,
                latency_ms: Some(41.7),
                response_status: Some(503),
                error_class: Some(ErrorClass::HttpStatus),
                response_excerpt: Some("upstream unavailable".into()),
            }],
        }
    }
}

/// A page of an endpoint's deliveries, newest first.
#[derive(Debug, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub(crate) struct WebhookDeliveryList {
    /// The deliveries on this page.
    pub items: Vec<WebhookDelivery>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

impl Example for WebhookDeliveryList {
    fn example() -> Self {
        Self { items: vec![WebhookDelivery::example()], next_cursor: None }
    }
}

const EXAMPLE_ENDPOINT: Uuid = uuid::uuid!("3c9a7f1e-2b4d-4e6f-8a1c-5d7e9f0a2b4c");
const EXAMPLE_TIME: OffsetDateTime = time::macros::datetime!(2024-02-01 10:30:00 UTC);

#[derive(Debug, ApiResponse)]
pub(crate) enum CreatedResponse {
    /// Registered. `secret` is shown this once.
    #[oai(status = 201, content_type = "application/json")]
    Created(Json<WebhookEndpoint>),
}

#[derive(Debug, ApiResponse)]
pub(crate) enum EndpointResponse {
    /// The endpoint.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<WebhookEndpoint>),
}

#[derive(Debug, ApiResponse)]
pub(crate) enum ListResponse {
    /// The key's endpoints.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<WebhookEndpointList>),
}

#[derive(Debug, ApiResponse)]
pub(crate) enum DeletedResponse {
    /// Deleted, with its delivery log; deliveries still to send were stopped.
    #[oai(status = 204)]
    Deleted,
}

#[derive(Debug, ApiResponse)]
pub(crate) enum DeliveriesResponse {
    /// A page of deliveries.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<WebhookDeliveryList>),
}

#[derive(Debug, ApiResponse)]
pub(crate) enum ResentResponse {
    /// Queued: the same event (same `webhook-id`, same body) is sent again at once.
    #[oai(status = 202, content_type = "application/json")]
    Accepted(Json<WebhookDelivery>),
}

/// `POST /api/webhook-endpoints`: an invalid body (400), one sent too slowly, too large or not
/// JSON, a URL that may not receive webhooks (422), the key's endpoint cap (409), an unknown
/// key, a limit, Postgres down.
pub(crate) enum CreateErrors {}
impl ErrorStatuses for CreateErrors {
    const STATUSES: &'static [u16] = &[400, 401, 408, 413, 415, 409, 422, 429, 500, 503];
}

/// `GET /api/webhook-endpoints`: an unknown parameter, an unknown key, a limit, Postgres down.
pub(crate) enum ListErrors {}
impl ErrorStatuses for ListErrors {
    const STATUSES: &'static [u16] = &[400, 401, 429, 500, 503];
}

/// One endpoint (read, delete, rotate, enable, its deliveries): also an endpoint that is not
/// this key's (404).
pub(crate) enum EndpointErrors {}
impl ErrorStatuses for EndpointErrors {
    const STATUSES: &'static [u16] = &[400, 401, 404, 429, 500, 503];
}

/// A resend: also a delivery still under way or an endpoint that is disabled (409).
pub(crate) enum ResendErrors {}
impl ErrorStatuses for ResendErrors {
    const STATUSES: &'static [u16] = &[400, 401, 404, 409, 429, 500, 503];
}

fn default_limit() -> i64 {
    50
}

/// How long registration waits for the URL's host to resolve.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

const NO_ENDPOINT: &str = "No webhook endpoint with this id.";

pub(crate) struct WebhooksApi;

#[OpenApi(tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Register a webhook endpoint
    ///
    /// The endpoint receives the events of every export this key requests (and still holds:
    /// not cancelled for itself) as signed `POST`s per the Standard Webhooks spec: headers
    /// `webhook-id` (the event's id, the same on every retry), `webhook-timestamp` and
    /// `webhook-signature`. The answer carries the signing `secret`, this once. A key may have
    /// at most 10 endpoints (409 past them). A URL that may not receive webhooks (not https,
    /// credentials or a fragment in it, a host that does not resolve or is or resolves to a
    /// loopback, private, link-local or other special-purpose address) is `422`.
    #[oai(path = "/api/webhook-endpoints", method = "post", operation_id = "create_webhook_endpoint")]
    async fn create(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        body: StrictJson<WebhookEndpointRequest>,
    ) -> Result<CreatedResponse, Errors<CreateErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let request = body.0;
        let description = request.description.unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(
                ApiError::from(FieldError::new("description", "must be at most 500 characters")).into()
            );
        }
        let mut event_types = request.event_types.unwrap_or_else(|| EventType::ALL.to_vec());
        event_types.sort_by_key(|e| EventType::ALL.iter().position(|a| a == e));
        let count = event_types.len();
        event_types.dedup();
        if event_types.is_empty() || event_types.len() < count {
            let problem = "must name at least one event type, each once";
            return Err(ApiError::from(FieldError::new("event_types", problem)).into());
        }
        let url = checked_url(&state, &request.url).await?;
        let mut db = state.db().await?;
        let new = webhooks::NewEndpoint { url: &url, description: &description, event_types: &event_types };
        let (endpoint, secret) = match webhooks::create(&mut db, key.id, &new, MAX_ENDPOINTS_PER_KEY).await {
            Ok(created) => created,
            Err(webhooks::CreateError::TooMany { .. }) => {
                return Err(ApiError::Conflict(
                    "This API key already has 10 webhook endpoints, the most it may have; delete one first.",
                )
                .into());
            }
            Err(webhooks::CreateError::Db(e)) => return Err(e.into()),
        };
        tracing::info!(webhook.endpoint_id = %endpoint.id, api_key.id = %key.id, url.host = url.host(), "webhook endpoint registered");
        let types: Vec<&str> = event_types.iter().map(|e| e.as_str()).collect();
        let details = serde_json::json!({ "url_host": url.host(), "event_types": types });
        audit(&state, &key, client, "webhook_endpoint.create", endpoint.id, Outcome::Success, details);
        Ok(CreatedResponse::Created(Json(WebhookEndpoint::new(endpoint, Some(&secret)))))
    }

    /// List webhook endpoints
    ///
    /// This key's endpoints, oldest first, without their secrets.
    #[oai(path = "/api/webhook-endpoints", method = "get", operation_id = "list_webhook_endpoints")]
    async fn list(
        &self,
        state: poem::web::Data<&AppState>,
        request: &poem::Request,
        auth: BearerKey,
        client: ClientAddr,
    ) -> Result<ListResponse, Errors<ListErrors>> {
        let key = state.authenticate(&auth, client).await?;
        crate::input::check_query_names(request.uri().query(), &[]).map_err(ApiError::Validation)?;
        let db = state.db().await?;
        let items =
            webhooks::list(&db, key.id).await?.into_iter().map(|e| WebhookEndpoint::new(e, None)).collect();
        Ok(ListResponse::Ok(Json(WebhookEndpointList { items })))
    }

    /// Get a webhook endpoint
    ///
    /// Without its secret. An endpoint of another key is `404`.
    #[oai(
        path = "/api/webhook-endpoints/:endpoint_id",
        method = "get",
        operation_id = "get_webhook_endpoint"
    )]
    async fn get(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// The endpoint's `id`.
        endpoint_id: Path<Uuid>,
    ) -> Result<EndpointResponse, Errors<EndpointErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let endpoint = own_endpoint(&state, &key, endpoint_id.0).await?;
        Ok(EndpointResponse::Ok(Json(WebhookEndpoint::new(endpoint, None))))
    }

    /// Delete a webhook endpoint
    ///
    /// With its delivery log. Deliveries still to send are stopped (one being sent at this
    /// moment may still arrive).
    #[oai(
        path = "/api/webhook-endpoints/:endpoint_id",
        method = "delete",
        operation_id = "delete_webhook_endpoint"
    )]
    async fn delete(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// The endpoint's `id`.
        endpoint_id: Path<Uuid>,
    ) -> Result<DeletedResponse, Errors<EndpointErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let mut db = state.db().await?;
        let deleted = webhooks::delete(&mut db, key.id, endpoint_id.0).await?;
        let outcome = if deleted { Outcome::Success } else { Outcome::NotFound };
        audit(&state, &key, client, "webhook_endpoint.delete", endpoint_id.0, outcome, serde_json::json!({}));
        if !deleted {
            return Err(ApiError::NotFound(NO_ENDPOINT).into());
        }
        Ok(DeletedResponse::Deleted)
    }

    /// Rotate a webhook endpoint's secret
    ///
    /// Answers with the new secret, this once. The previous secret keeps signing beside it
    /// for `WEBHOOK_SECRET_OVERLAP_SECS` (24 hours by default; until
    /// `previous_secret_expires_at`): meanwhile `webhook-signature` carries both signatures,
    /// space-separated, so a receiver verifies with either secret while it switches over.
    #[oai(
        path = "/api/webhook-endpoints/:endpoint_id/rotate-secret",
        method = "post",
        operation_id = "rotate_webhook_secret"
    )]
    async fn rotate(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// The endpoint's `id`.
        endpoint_id: Path<Uuid>,
    ) -> Result<EndpointResponse, Errors<EndpointErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let db = state.db().await?;
        let rotated = webhooks::rotate(&db, key.id, endpoint_id.0, state.webhooks.secret_overlap).await?;
        let outcome = if rotated.is_some() { Outcome::Success } else { Outcome::NotFound };
        audit(
            &state,
            &key,
            client,
            "webhook_endpoint.rotate_secret",
            endpoint_id.0,
            outcome,
            serde_json::json!({}),
        );
        let (endpoint, secret) = rotated.ok_or(ApiError::NotFound(NO_ENDPOINT))?;
        Ok(EndpointResponse::Ok(Json(WebhookEndpoint::new(endpoint, Some(&secret)))))
    }

    /// Enable a webhook endpoint again
    ///
    /// An endpoint whose deliveries have all failed for `WEBHOOK_DISABLE_AFTER_SECS` (a day by
    /// default) is disabled: its deliveries still to send stop, and the events after that are
    /// recorded for it unsent. Enabling it forgets its failures; with `resend=true` the
    /// deliveries that ended unsent because it was disabled are sent now (each still under its
    /// event's `webhook-id`), otherwise only new events are.
    #[oai(
        path = "/api/webhook-endpoints/:endpoint_id/enable",
        method = "post",
        operation_id = "enable_webhook_endpoint"
    )]
    async fn enable(
        &self,
        state: poem::web::Data<&AppState>,
        request: &poem::Request,
        auth: BearerKey,
        client: ClientAddr,
        /// The endpoint's `id`.
        endpoint_id: Path<Uuid>,
        /// Also send the deliveries that ended unsent while it was disabled (`false` by default).
        resend: Query<Option<bool>>,
    ) -> Result<EndpointResponse, Errors<EndpointErrors>> {
        let key = state.authenticate(&auth, client).await?;
        crate::input::check_query_names(request.uri().query(), &["resend"]).map_err(ApiError::Validation)?;
        let mut db = state.db().await?;
        let resend = resend.0.unwrap_or(false);
        let enabled = webhooks::enable(&mut db, key.id, endpoint_id.0, resend).await?;
        let outcome = if enabled.is_some() { Outcome::Success } else { Outcome::NotFound };
        let resent = enabled.as_ref().map_or(0, |(_, n)| *n);
        let details = serde_json::json!({ "resend": resend, "resent": resent });
        audit(&state, &key, client, "webhook_endpoint.enable", endpoint_id.0, outcome, details);
        let (endpoint, _) = enabled.ok_or(ApiError::NotFound(NO_ENDPOINT))?;
        Ok(EndpointResponse::Ok(Json(WebhookEndpoint::new(endpoint, None))))
    }

    /// List an endpoint's deliveries
    ///
    /// The delivery log, newest first, in pages (pass the previous page's `next_cursor` as
    /// `cursor`): each event sent to the endpoint, its state, its next attempt, and every
    /// attempt with the endpoint's status code, latency and error class.
    #[oai(
        path = "/api/webhook-endpoints/:endpoint_id/deliveries",
        method = "get",
        operation_id = "list_webhook_deliveries"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn deliveries(
        &self,
        state: poem::web::Data<&AppState>,
        request: &poem::Request,
        auth: BearerKey,
        client: ClientAddr,
        /// The endpoint's `id`.
        endpoint_id: Path<Uuid>,
        /// Page size, 1 to 200 (default 50).
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<i64>,
        /// The previous page's `next_cursor`.
        cursor: Query<Option<Uuid>>,
    ) -> Result<DeliveriesResponse, Errors<EndpointErrors>> {
        let key = state.authenticate(&auth, client).await?;
        crate::input::check_query_names(request.uri().query(), &["limit", "cursor"])
            .map_err(ApiError::Validation)?;
        let endpoint = own_endpoint(&state, &key, endpoint_id.0).await?;
        let db = state.db().await?;
        let page = match deliveries::page(&db, endpoint.id, cursor.0, limit.0 + 1).await {
            Ok(page) => page,
            Err(deliveries::PageError::UnknownCursor) => {
                return Err(ApiError::from(FieldError::new(
                    "cursor",
                    "does not name a delivery of this endpoint",
                ))
                .into());
            }
            Err(deliveries::PageError::Db(e)) => return Err(e.into()),
        };
        let more = page.len() as i64 > limit.0;
        let items: Vec<WebhookDelivery> =
            page.into_iter().take(limit.0 as usize).map(WebhookDelivery::from).collect();
        let next_cursor = if more { items.last().map(|d| d.id) } else { None };
        Ok(DeliveriesResponse::Ok(Json(WebhookDeliveryList { items, next_cursor })))
    }

    /// Resend a delivery
    ///
    /// Sends the delivery's event again at once, as a new series of attempts: the same body
    /// under the same `webhook-id`, so a receiver that already processed it can recognise it.
    /// A delivery still pending or retrying, or one of a disabled endpoint (enable it first),
    /// is `409`.
    #[oai(
        path = "/api/webhook-endpoints/:endpoint_id/deliveries/:delivery_id/resend",
        method = "post",
        operation_id = "resend_webhook_delivery"
    )]
    async fn resend(
        &self,
        state: poem::web::Data<&AppState>,
        auth: BearerKey,
        client: ClientAddr,
        /// The endpoint's `id`.
        endpoint_id: Path<Uuid>,
        /// The delivery's `id`.
        delivery_id: Path<Uuid>,
    ) -> Result<ResentResponse, Errors<ResendErrors>> {
        let key = state.authenticate(&auth, client).await?;
        let endpoint = own_endpoint(&state, &key, endpoint_id.0).await?;
        if endpoint.disabled_at.is_some() {
            return Err(ApiError::Conflict("The endpoint is disabled; enable it first.").into());
        }
        let mut db = state.db().await?;
        let resent = deliveries::resend(&mut db, endpoint.id, delivery_id.0).await?;
        let (outcome, result) = match &resent {
            deliveries::Resent::Queued(_) => (Outcome::Success, "queued"),
            deliveries::Resent::InFlight(_) => (Outcome::Unchanged, "in_flight"),
            deliveries::Resent::NotFound => (Outcome::NotFound, "not_found"),
        };
        let details = serde_json::json!({ "delivery_id": delivery_id.0, "result": result });
        audit(&state, &key, client, "webhook_delivery.resend", endpoint.id, outcome, details);
        match resent {
            deliveries::Resent::Queued(delivery) => Ok(ResentResponse::Accepted(Json(delivery.into()))),
            deliveries::Resent::InFlight(_) => Err(ApiError::Conflict(
                "The delivery is still under way (pending or retrying); it cannot be resent until it ends.",
            )
            .into()),
            deliveries::Resent::NotFound => {
                Err(ApiError::NotFound("No delivery with this id at this endpoint.").into())
            }
        }
    }
}

/// Endpoint `id`, if it is `key`'s (another key's looks like it does not exist).
async fn own_endpoint(state: &AppState, key: &ApiKey, id: Uuid) -> Result<webhooks::Endpoint, ApiError> {
    let db = state.db().await?;
    webhooks::get(&db, key.id, id).await?.ok_or(ApiError::NotFound(NO_ENDPOINT))
}

/// The URL, if webhooks may be sent to it: its form is a 400; what it is not allowed to reach,
/// by itself or by what its host resolves to now, a 422.
async fn checked_url(state: &AppState, raw: &str) -> Result<EndpointUrl, ApiError> {
    let refused = |e: Refused| match e {
        Refused::Malformed | Refused::TooLong => {
            ApiError::Validation(vec![FieldError::new("url", e.to_string())])
        }
        other => ApiError::Unprocessable(vec![FieldError::new("url", other.to_string())]),
    };
    let policy = state.webhooks.policy;
    let url = policy.check_url(raw).map_err(refused)?;
    // What a name resolves to is not told (no probing of internal DNS through this answer):
    // unresolvable and resolving to a refused address get the same message.
    let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, policy.resolve(url.host(), url.port()))
        .await
        .unwrap_or(Err(Refused::Unresolved));
    if let Err(e) = resolved {
        tracing::info!(host = %url.host(), reason = %e, "webhook endpoint refused at registration");
        return Err(ApiError::Unprocessable(vec![FieldError::new(
            "url",
            "its host does not resolve to an address webhooks may be sent to",
        )]));
    }
    Ok(url)
}

/// Records an endpoint action in the audit trail (never its URL's path or query, which may
/// carry a receiver's token, nor its secret).
fn audit(
    state: &AppState,
    key: &ApiKey,
    client: ClientAddr,
    action: &'static str,
    endpoint: Uuid,
    outcome: Outcome,
    details: serde_json::Value,
) {
    let target = Some(format!("webhook_endpoint:{endpoint}"));
    state.api_audit.record(key, client, action, target, outcome, details);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented<S: ErrorStatuses>() -> Vec<u16> {
        use poem_openapi::ApiResponse as _;
        Errors::<S>::meta().responses.iter().filter_map(|r| r.status).collect()
    }

    #[test]
    fn each_operation_documents_exactly_the_error_statuses_it_names() {
        assert_eq!(documented::<CreateErrors>(), CreateErrors::STATUSES);
        assert_eq!(documented::<ListErrors>(), ListErrors::STATUSES);
        assert_eq!(documented::<EndpointErrors>(), EndpointErrors::STATUSES);
        assert_eq!(documented::<ResendErrors>(), ResendErrors::STATUSES);
    }

    #[test]
    fn event_bodies_carry_the_export_as_get_shows_it_without_a_link() {
        let at = time::macros::datetime!(2024-02-01 10:30:04.5 UTC);
        let export = Export {
            id: uuid::uuid!("550e8400-e29b-41d4-a716-446655440000"),
            api_key_id: None,
            account_id: "ACC-1".into(),
            table_name: "bank_transactions".into(),
            date_from: time::macros::date!(2024 - 01 - 01),
            date_to: time::macros::date!(2024 - 01 - 31),
            format: "csv".into(),
            status: shared::exports::ExportStatus::Completed,
            job_id: Some(1),
            file_key: Some("exports/x/y/statement.csv".into()),
            file_size: Some(10),
            row_count: Some(1),
            rows_exported: 1,
            sha256: Some("ab".repeat(32)),
            failure: None,
            created_at: at,
            snapshot_at: Some(at),
            started_at: Some(at),
            completed_at: Some(at),
            expires_at: Some(at),
            file_lost_at: None,
            snapshot_lag_seconds: None,
            snapshot_position: None,
            download_links_issued: 2,
            downloads: 1,
            time_zone: "UTC".into(),
            statement_number: None,
            statement: None,
            error_detail: None,
        };
        let body = event_body(EventType::ExportCompleted, at, export).unwrap();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["type"], "export.completed");
        assert_eq!(value["timestamp"], "2024-02-01T10:30:04.5Z");
        assert_eq!(value["data"]["reference_id"], "550e8400-e29b-41d4-a716-446655440000");
        assert_eq!(value["data"]["status"], "COMPLETED");
        assert_eq!(value["data"]["sha256"], "ab".repeat(32));
        assert!(
            value["data"].get("file_url").is_none() && value["data"].get("file_url_expires_at").is_none()
        );
        assert!(!body.contains("exports/x/y"), "no storage key in the body: {body}");
    }
}
