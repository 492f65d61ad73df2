//! Every route the API serves, declared once: method, path template and handler. The router,
//! the `Allow` header of a 405 and the route label of the HTTP metrics are all read from this
//! table. The API's operations are declared by their `#[oai]` attributes and enter the table
//! from the generated spec; everything else is listed in [`declared`].
//!
//! Path templates are OpenAPI's: `{name}` is one segment, `{*name}` the rest of the path (its
//! label is written `{name}`).

use std::sync::LazyLock;

use poem::{
    EndpointExt as _,
    endpoint::BoxEndpoint,
    http::Method,
    web::{Data, Html},
};

use crate::{AppState, dashboard, files, metrics, openapi_service};

/// One route.
pub(crate) struct Route {
    pub(crate) method: Method,
    /// The path template, e.g. `/dashboard/exports/{id}`; also the metrics label.
    pub(crate) path: &'static str,
    serve: Serve,
}

/// What answers a route.
enum Serve {
    /// An operation of the OpenAPI service.
    Operation,
    /// A dashboard page: served with the dashboard's security headers, with or without a
    /// trailing slash.
    Page(fn() -> BoxEndpoint<'static>),
    /// Any other endpoint.
    Plain(fn() -> BoxEndpoint<'static>),
    /// Everything at and under the path (the Swagger UI).
    Nest(fn() -> BoxEndpoint<'static>),
}

impl Route {
    fn page(method: Method, path: &'static str, handler: fn() -> BoxEndpoint<'static>) -> Self {
        Self { method, path, serve: Serve::Page(handler) }
    }

    fn plain(method: Method, path: &'static str, handler: fn() -> BoxEndpoint<'static>) -> Self {
        Self { method, path, serve: Serve::Plain(handler) }
    }

    /// Whether `segments` (a request path split at `/`) are this route's.
    fn matches(&self, segments: &[&str]) -> bool {
        let template = segments_of(self.path);
        if let Serve::Nest(_) = self.serve {
            return segments.starts_with(&template);
        }
        match template.last() {
            Some(last) if last.starts_with("{*") => {
                segments.len() >= template.len()
                    && template[..template.len() - 1].iter().zip(segments).all(|(t, s)| segment_matches(t, s))
            }
            _ => {
                segments.len() == template.len()
                    && template.iter().zip(segments).all(|(t, s)| segment_matches(t, s))
            }
        }
    }

    /// Literal segments: where two templates match a path, the more literal one is its route.
    fn literal_segments(&self) -> usize {
        segments_of(self.path).iter().filter(|s| !s.starts_with('{')).count()
    }

    /// The path in poem's syntax (`:name`, `*name`).
    fn poem_path(&self) -> String {
        let segments: Vec<String> = segments_of(self.path)
            .into_iter()
            .map(|s| match s.strip_prefix("{*").or_else(|| s.strip_prefix('{')) {
                Some(name) if s.starts_with("{*") => format!("*{}", name.trim_end_matches('}')),
                Some(name) => format!(":{}", name.trim_end_matches('}')),
                None => s.to_owned(),
            })
            .collect();
        format!("/{}", segments.join("/"))
    }

    /// The metrics label: the template, with `{*name}` written `{name}`.
    fn label(&self) -> &'static str {
        LABELS.iter().find(|(path, _)| *path == self.path).map_or(self.path, |(_, label)| label)
    }
}

fn segments_of(path: &str) -> Vec<&str> {
    path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect()
}

fn segment_matches(template: &str, segment: &str) -> bool {
    template.starts_with('{') || template == segment
}

/// Every route that is not an API operation.
fn declared() -> Vec<Route> {
    use Method as M;
    vec![
        Route::plain(M::GET, "/openapi.json", || openapi_json.map_to_response().boxed()),
        Route::plain(M::GET, "/openapi.yaml", || openapi_yaml.map_to_response().boxed()),
        Route {
            method: M::GET,
            path: "/docs",
            serve: Serve::Nest(|| poem::Route::new().at("/", swagger_ui).boxed()),
        },
        Route::plain(M::GET, "/files/{*key}", || files::download.map_to_response().boxed()),
        // Its own HEAD (poem's would run the GET and open the file).
        Route::plain(M::HEAD, "/files/{*key}", || files::download.map_to_response().boxed()),
        Route::plain(M::GET, "/metrics", || metrics::scrape.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard", || dashboard::overview::page.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard/sign-in", || dashboard::sign_in::form.map_to_response().boxed()),
        Route::page(M::POST, "/dashboard/sign-in", || dashboard::sign_in::submit.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard/sign-in/sso", || dashboard::sso::start.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard/sign-in/callback", || {
            dashboard::sso::callback.map_to_response().boxed()
        }),
        Route::page(M::POST, "/dashboard/sign-out", || {
            dashboard::sign_in::sign_out.map_to_response().boxed()
        }),
        Route::page(M::GET, "/dashboard/queue", || dashboard::queue::page.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard/webhooks", || dashboard::webhooks::list.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard/webhooks/{id}", || {
            dashboard::webhooks::detail.map_to_response().boxed()
        }),
        Route::page(M::GET, "/dashboard/schedules", || dashboard::schedules::list.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard/schedules/{id}", || {
            dashboard::schedules::detail.map_to_response().boxed()
        }),
        Route::page(M::POST, "/dashboard/webhooks/{id}/{action}", || {
            dashboard::webhooks::enable.map_to_response().boxed()
        }),
        Route::page(M::POST, "/dashboard/webhook-deliveries/{id}/{action}", || {
            dashboard::webhooks::resend.map_to_response().boxed()
        }),
        Route::page(M::POST, "/dashboard/jobs/{id}/{action}", || {
            dashboard::queue::act.map_to_response().boxed()
        }),
        Route::page(M::GET, "/dashboard/audit", || dashboard::audit::page.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard/health", || dashboard::health::page.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard/exports", || dashboard::export_list::page.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard/exports/{id}", || dashboard::exports::page.map_to_response().boxed()),
        Route::page(M::GET, "/dashboard/assets/{name}", || {
            dashboard::layout::asset.map_to_response().boxed()
        }),
        Route::page(M::GET, "/admin/api-keys", || dashboard::keys::page.map_to_response().boxed()),
        Route::page(M::POST, "/admin/api-keys", || dashboard::keys::create.map_to_response().boxed()),
        Route::page(M::POST, "/admin/api-keys/{id}/{action}", || {
            dashboard::keys::change.map_to_response().boxed()
        }),
    ]
}

/// Labels that differ from their template.
const LABELS: [(&str, &str); 1] = [("/files/{*key}", "/files/{key}")];

/// The whole table: the API's operations (from the spec), then [`declared`].
pub(crate) static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    let spec: serde_json::Value =
        serde_json::from_str(&openapi_service().spec()).expect("the generated spec is JSON");
    let mut routes = Vec::new();
    for (path, operations) in spec["paths"].as_object().expect("the spec has paths") {
        let path: &'static str = Box::leak(path.clone().into_boxed_str());
        for method in operations.as_object().expect("a path has operations").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("an HTTP method");
            routes.push(Route { method, path, serve: Serve::Operation });
        }
    }
    routes.extend(declared());
    routes
});

/// The router: the OpenAPI service, then every declared route.
pub(crate) fn router() -> poem::Route {
    let mut router = poem::Route::new().nest("/", openapi_service());
    let mut paths: Vec<&Route> = Vec::new();
    for route in ROUTES.iter().filter(|r| !matches!(r.serve, Serve::Operation)) {
        if !paths.iter().any(|p| p.path == route.path) {
            paths.push(route);
        }
    }
    for first in paths {
        if let Serve::Nest(handler) = first.serve {
            router = router.nest(first.path, handler());
            continue;
        }
        let methods = || {
            let mut methods = poem::RouteMethod::new();
            for route in ROUTES.iter().filter(|r| r.path == first.path) {
                let endpoint = match route.serve {
                    Serve::Page(handler) => handler().with(dashboard::security_headers()).boxed(),
                    Serve::Plain(handler) => handler(),
                    Serve::Operation | Serve::Nest(_) => continue,
                };
                methods = methods.method(route.method.clone(), endpoint);
            }
            methods
        };
        if let Serve::Page(_) = first.serve {
            router = router.at(format!("{}/", first.poem_path()), methods());
        }
        router = router.at(first.poem_path(), methods());
    }
    router
}

/// The route a request path belongs to (the most literal template that matches it).
fn route_of(path: &str) -> Option<&'static Route> {
    let segments = segments_of(path);
    ROUTES.iter().filter(|r| r.matches(&segments)).max_by_key(|r| r.literal_segments())
}

/// The route a path belongs to, with its variable parts named (metric labels must not grow
/// with ids). Paths outside the service's routes are `other`; the root, which serves nothing,
/// keeps a label of its own.
pub(crate) fn label(path: &str) -> &'static str {
    if segments_of(path).is_empty() {
        return "/";
    }
    route_of(path).map_or("other", Route::label)
}

/// The `Allow` header of a 405 on `path`: the methods its route answers (RFC 9110).
pub(crate) fn allow(path: &str) -> String {
    let Some(route) = route_of(path) else { return "GET".to_owned() };
    let mut methods: Vec<&str> =
        ROUTES.iter().filter(|r| r.path == route.path).map(|r| r.method.as_str()).collect();
    methods.sort_unstable();
    methods.dedup();
    methods.join(", ")
}

/// The published spec (`crate::openapi_spec`) names this service's `PUBLIC_BASE_URL` in `servers`.
#[poem::handler]
fn openapi_json(Data(state): Data<&AppState>) -> poem::Response {
    poem::Response::builder().content_type("application/json").body(state.published_spec().json.clone())
}

#[poem::handler]
fn openapi_yaml(Data(state): Data<&AppState>) -> String {
    state.published_spec().yaml.clone()
}

/// Swagger UI (`/docs`) on the published spec.
#[poem::handler]
fn swagger_ui(Data(state): Data<&AppState>) -> Html<String> {
    Html(state.published_spec().docs.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request path for a template: each variable filled in (an asset's with one that exists).
    fn sample(template: &str) -> String {
        let segments: Vec<&str> = segments_of(template)
            .into_iter()
            .map(|s| match s {
                "{name}" => "dashboard.css",
                s if s.starts_with("{*") => "exports/a/b.csv",
                s if s.starts_with('{') => "x1",
                s => s,
            })
            .collect();
        format!("/{}", segments.join("/"))
    }

    #[test]
    fn every_route_of_the_spec_and_the_dashboard_has_its_own_label() {
        let spec: serde_json::Value = serde_json::from_str(&openapi_service().spec()).unwrap();
        let spec_paths: Vec<&String> = spec["paths"].as_object().unwrap().keys().collect();
        assert!(spec_paths.len() >= 5, "{spec_paths:?}");
        for path in spec_paths {
            assert_eq!(label(&sample(path)), path.as_str(), "{path}");
        }
        let pages: Vec<&Route> = ROUTES.iter().filter(|r| matches!(r.serve, Serve::Page(_))).collect();
        assert!(pages.iter().any(|r| r.path == "/dashboard/queue"));
        for route in ROUTES.iter() {
            assert_eq!(label(&sample(route.path)), route.label(), "{}", route.path);
            assert_ne!(route.label(), "other");
        }
    }

    #[test]
    fn ids_and_keys_collapse_into_their_route() {
        for (path, expected) in [
            ("/api/export/0b6f0f0e-1111-4222-8333-444455556666", "/api/export/{reference_id}"),
            ("/api/export/x/cancel", "/api/export/{reference_id}/cancel"),
            ("/files/exports/a/8c1f0e2d/s.csv", "/files/{key}"),
            ("/dashboard/", "/dashboard"),
            ("/", "/"),
            ("/docs/index.html", "/docs"),
            ("/wp-login.php", "other"),
            ("/api/export/a/b/c/d", "other"),
        ] {
            assert_eq!(label(path), expected, "{path}");
        }
    }

    #[tokio::test]
    async fn the_router_serves_every_route_of_the_table_with_its_method() {
        let client = poem::test::TestClient::new(router());
        for route in ROUTES.iter() {
            let path = sample(route.path);
            let response = client.request(route.method.clone(), &path).send().await;
            let status = response.0.status();
            assert!(
                status != poem::http::StatusCode::NOT_FOUND
                    && status != poem::http::StatusCode::METHOD_NOT_ALLOWED,
                "{} {path}: {status}",
                route.method
            );
        }
        let page = client.get("/dashboard/").send().await;
        assert_ne!(
            page.0.status(),
            poem::http::StatusCode::NOT_FOUND,
            "a page answers with a trailing slash"
        );
        assert_eq!(client.get("/nowhere").send().await.0.status(), poem::http::StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_405_names_the_methods_of_its_route() {
        let posts =
            ["/api/export", "/api/export/x1/cancel", "/admin/api-keys/x1/delete", "/dashboard/jobs/1/retry"];
        for path in posts {
            assert_eq!(allow(path), "POST", "{path}");
        }
        for path in ["/dashboard/sign-in", "/admin/api-keys"] {
            assert_eq!(allow(path), "GET, POST", "{path}");
        }
        for path in ["/api/export/x1", "/health", "/docs/index.html"] {
            assert_eq!(allow(path), "GET", "{path}");
        }
        assert_eq!(allow("/files/exports/a/b/s.csv"), "GET, HEAD");
    }
}
