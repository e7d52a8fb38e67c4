//! The status page's routes, `GET /` and `GET /messages/:id`, for a browser:
//! HTTP Basic authentication (any user name, a token as the password), so
//! an operator can open it without a tool that sets headers. The data is
//! gathered in a blocking thread and the page rendered by [`crate::status`].

use base64::Engine;
use tide::{Request, Response, StatusCode};

use super::routes::constant_time_eq;
use super::State;
use crate::now_ms;
use crate::status::page;

/// Adds the routes to the API's router.
pub fn mount(app: &mut tide::Server<State>) {
    app.at("/").get(index);
    app.at("/messages/:id").get(message);
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

async fn index(req: Request<State>) -> tide::Result {
    if let Some(r) = refuse(&req) {
        return Ok(r);
    }
    let state = req.state().clone();
    let body = smol::unblock(move || {
        let now = now_ms();
        let counts = state.queue.counts();
        let recent = state.metrics.activity().snapshot(now);
        page::index(&page::Overview {
            hostname: &state.hostname,
            now,
            counts: &counts,
            per_minute: &recent.per_minute,
            reasons: &recent.reasons,
            failures: &recent.failures,
        })
    })
    .await;
    Ok(html(StatusCode::Ok, body))
}

async fn message(req: Request<State>) -> tide::Result {
    if let Some(r) = refuse(&req) {
        return Ok(r);
    }
    let id = req.param("id").unwrap_or_default();
    Ok(match req.state().queue.get(id) {
        Some(record) => html(
            StatusCode::Ok,
            page::message(&req.state().hostname, &record),
        ),
        None => html(StatusCode::NotFound, page::not_found(id)),
    })
}
