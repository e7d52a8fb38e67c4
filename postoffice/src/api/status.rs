//! The status page's routes, `GET /` and `GET /messages/:id`, for a browser:
//! HTTP Basic authentication (any user name, a token as the password), so
//! an operator can open it without a tool that sets headers. The data is
//! read from the queue (a record from disk, off the executor) and the page
//! rendered by [`crate::status`].

use base64::Engine;
use hedwig::id::Id;
use tide::{Request, Response, StatusCode};

use super::routes::constant_time_eq;
use super::State;
use crate::now_ms;
use crate::status::page;

/// Adds the routes to the API's router.
pub fn mount(app: &mut tide::Server<State>) {
    // One handler for both pages: a route is a good part of a page's code.
    app.at("/").get(page);
    app.at("/messages/:id").get(page);
}

/// `Some(401)` unless the request's Basic credentials carry an accepted token.
fn refuse(req: &Request<State>) -> Option<Response> {
    let password = req
        .header("Authorization")
        .and_then(|v| {
            v.last()
                .as_str()
                .strip_prefix("Basic ")
                .map(str::trim)
                .map(str::to_string)
        })
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| {
            let colon = raw.iter().position(|&b| b == b':')?;
            Some(raw[colon + 1..].to_vec())
        });
    if let Some(password) = password {
        // Check every token, so which one matched does not show in the timing.
        let ok = req.state().tokens.iter().fold(false, |ok, t| {
            constant_time_eq(&password, t.as_bytes()) | ok
        });
        if ok {
            return None;
        }
    }
    let mut r = html(
        StatusCode::Unauthorized,
        "<!DOCTYPE html><title>401</title><p>Log in with any user name and a postoffice token as the password.</p>\n".into(),
    );
    r.insert_header(
        "WWW-Authenticate",
        "Basic realm=\"hedwig\", charset=\"UTF-8\"",
    );
    Some(r)
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(status);
    r.set_body(body);
    r.set_content_type("text/html; charset=utf-8");
    r.insert_header("Cache-Control", "no-store");
    r
}

/// The main page, or with an id the page of that message.
async fn page(req: Request<State>) -> tide::Result {
    if let Some(r) = refuse(&req) {
        return Ok(r);
    }
    let state = req.state();
    let (status, body) = match req.param("id").ok() {
        Some(text) => {
            let record = match text.parse::<Id>() {
                Ok(id) => state.queue.get(id).await.ok().flatten(),
                Err(_) => None,
            };
            match record {
                Some(record) => (StatusCode::Ok, page::message(&state.hostname, &record)),
                None => (StatusCode::NotFound, page::not_found(text)),
            }
        }
        None => {
            let now = now_ms();
            let counts = state.queue.counts();
            let recent = state.metrics.activity().snapshot(now);
            let body = page::index(&page::Overview {
                hostname: &state.hostname,
                now,
                counts: &counts,
                per_minute: &recent.per_minute,
                reasons: &recent.reasons,
                failures: &recent.failures,
            });
            (StatusCode::Ok, body)
        }
    };
    Ok(html(status, body))
}
